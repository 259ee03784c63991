// Kernel launches of the CUDA metapopulation engine (metapop_cuda.cu). Every pointer in `p` and `st`
// is a device pointer.
#pragma once

#include <cuda_runtime.h>

#include "metapop.h"

namespace healthai::cuda {

// One tau-leap sub-step of every cell, reading neighbours' I from `snapshot`.
void launch_leap(const MetapopProblem& p, const MetapopState<int32_t>& st, const int32_t* snapshot, int64_t t,
                 uint32_t gsub, double dt, bool day_end, cudaStream_t s);

// RK4 stage q of the deterministic engine: y = (S, E, I, R, C, H) blocks of `cells`; reads k_prev,
// writes k_cur and accumulates sum; then rk4_update adds h/6 * sum; then day-end peaks. hosp_frac is 0
// without a hospital compartment.
void launch_rk4_stage(const MetapopProblem& p, const double* y, const double* k_prev, double* k_cur, double* sum,
                      int q, double h, int64_t t, double hosp_frac, cudaStream_t s);
void launch_rk4_update(int64_t n, double* y, const double* sum, double h, cudaStream_t s);
void launch_peaks(const MetapopProblem& p, const double* y, double* peak_value, int32_t* peak_step, int64_t t,
                  cudaStream_t s);

}  // namespace healthai::cuda
