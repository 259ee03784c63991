// The constant leaps of one stochastic call with their look-up tables, and the AVX-512 kernel of a
// region's transitions (metapop_avx512.cpp), which gives the bits of metapop::leap per cell.
#pragma once

#include <cstdint>

#include "metapop.h"
#include "rng/philox.h"

namespace healthai::cpu {

struct Leaps {
  rng::Leap onset, recovery, admit, discharge;
  rng::DrawTables onset_tab, recovery_tab, general, admit_tab, discharge_tab;
};

// True when this build has the AVX-512 kernel and this CPU runs it (AVX-512 F and DQ).
bool avx512_usable();

// metapop::leap for every run k of region i in one sub-step, sixteen runs per step: the neighbours'
// pressure summed as gather_live (metapop_cpu.cpp) does over the neighbours flagged infectious, row
// the region's metapop::away_row of day t. Needs the look-up tables (L.general with log-factorials).
// Cells the vectors do not cover (a rare path, a short run tail) are done by metapop::leap itself, so every
// cell gets exactly the scalar (and CUDA) result.
void leap_region_avx512(const MetapopProblem& p, const MetapopState<int32_t>& out, const int32_t* i_now, int64_t i,
                        int64_t t, uint32_t gsub, double dt, const uint8_t* infectious, double row,
                        const Leaps& L, bool day_end);

// For tests, from the vector code: out[0..4n) = det_exp(x), det_expm1(x), det_log(|x|) and log k!
// (k = floor |x|; DrawTables::lf with a 1000-entry table, Stirling above). Needs avx512_usable().
void simd_math_check(const double* x, int64_t n, double* out);

}  // namespace healthai::cpu
