// Per-cell (region i, run k) arithmetic of the metapopulation engine, shared by the CPU and CUDA
// kernels so both take the same transitions from the same Philox streams.
#pragma once

#include <cmath>
#include <cstdint>

#include "metapop.h"
#include "rng/philox.h"

namespace healthai::metapop {

// Force of infection of cell (i, k) on day t (local to the call): own = I_i/N_i, away = sum_j w_ij I_j/N_j,
// row = sum_j w_ij.
HAI_HD double force(const MetapopProblem& p, int64_t i, int64_t k, int64_t t, double own, double away, double row) {
  const int64_t x = t * p.n_regions + i;
  const double tr = p.travel[x];
  return p.beta[k] * p.contact[x] * ((1.0 - tr * row) * own + tr * away);
}

// One tau-leap of dt days for cell x = i * runs + k; gsub is the global sub-step (RNG counter).
// I is read from i_now (the sub-step's start, which the neighbours' pressure also reads) and the new
// I written to st.i (another buffer, or the same one when the caller has a snapshot of i_now).
// onset / recovery: the constant E -> I and I -> R leaps of this dt, with their look-up tables;
// general: the tables for the other draws (log-factorials only; empty on the device); admit /
// discharge (+ tables): the hospital leaps (probability hosp_frac of those leaving I; H -> R), with st.h.
HAI_HD void leap(const MetapopProblem& p, const MetapopState<int32_t>& st, const int32_t* i_now, int64_t i, int64_t k, int64_t t,
                 uint32_t gsub, double dt, double lambda, const rng::Leap& onset, const rng::Leap& recovery,
                 const rng::DrawTables& onset_tab, const rng::DrawTables& recovery_tab, const rng::DrawTables& general,
                 const rng::Leap& admit, const rng::Leap& discharge, const rng::DrawTables& admit_tab,
                 const rng::DrawTables& discharge_tab, bool day_end) {
  const int64_t x = i * p.runs + k;
  rng::Stream s(p.seed, static_cast<uint32_t>(k), static_cast<uint32_t>(i), gsub);
  const int64_t S = st.s[x], E = st.e[x], I = i_now[x];
  const int64_t new_e = rng::binomial_rate(S, lambda * dt, s, general);
  const double v = p.vacc[t * p.n_regions + i];
  const int64_t new_v = rng::binomial_rate(S - new_e, v * dt, s, general);
  const int64_t new_i = rng::binomial(E, onset, s, onset_tab);
  const int64_t new_r = rng::binomial(I, recovery, s, recovery_tab);
  st.s[x] = static_cast<int32_t>(S - new_e - new_v);
  st.e[x] = static_cast<int32_t>(E + new_e - new_i);
  const int32_t i_next = static_cast<int32_t>(I + new_i - new_r);
  st.i[x] = i_next;
  int64_t new_h = 0, new_d = 0;  // hospital admissions and discharges (drawn after the SEIR draws)
  if (st.h != nullptr) {
    const int64_t H = st.h[x];
    new_h = rng::binomial(new_r, admit, s, admit_tab);
    new_d = rng::binomial(H, discharge, s, discharge_tab);
    st.h[x] = static_cast<int32_t>(H + new_h - new_d);
  }
  st.r[x] += static_cast<int32_t>(new_r - new_h + new_d + new_v);
  st.incidence[x] += static_cast<int32_t>(new_i);
  if (day_end && i_next > st.peak_value[x]) {
    st.peak_value[x] = i_next;
    st.peak_step[x] = static_cast<int32_t>(p.step0 + t + 1);
  }
}

// The ODE's components per cell: S, E, I, R, C (the cumulative E -> I flow), H.
constexpr int kOdeComponents = 6;

// ODE right-hand side of cell (i, k): d(S, E, I, R, C, H)/dt; hosp_frac = 0 (no hospital compartment)
// keeps H at 0 and gives R exactly the SEIR flows.
HAI_HD void rhs(const MetapopProblem& p, int64_t i, int64_t t, double lambda, double S, double E, double I,
                double H, double hosp_frac, double out[kOdeComponents]) {
  const double v = p.vacc[t * p.n_regions + i];
  const double inf = lambda * S, vac = v * S, onset = p.sigma * E, rec = p.gamma * I;
  const double admit = hosp_frac * rec, discharge = p.hosp_rate * H;
  out[0] = -inf - vac;
  out[1] = inf - onset;
  out[2] = onset - rec;
  out[3] = (rec - admit) + vac + discharge;
  out[4] = onset;
  out[5] = admit - discharge;
}

}  // namespace healthai::metapop
