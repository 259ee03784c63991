// Per-cell (region i, run k) arithmetic of the metapopulation engine, shared by the CPU and CUDA
// kernels so both take the same transitions from the same Philox streams.
#pragma once

#include <cmath>
#include <cstdint>

#include "metapop.h"
#include "rng/philox.h"

namespace healthai::metapop {

// Travel multiplier of the edge between regions with multipliers a and b: the stricter (smaller)
// when either restricts (< 1), else the larger. So a region's multiplier scales its edges both ways
// (its residents' contacts away and visitors' contacts in it), one multiplier for all regions scales
// every edge by it, and 0 cuts a region off.
HAI_HD double edge_travel(double a, double b) {
  const double lo = a < b ? a : b, hi = a < b ? b : a;
  return lo < 1.0 ? lo : hi;
}

// Coefficient of neighbour j's prevalence on edge e of region i on day t (local to the call):
// w_ij times the edge's travel multiplier, over N_j. With multipliers of 1: w_ij / N_j to the bit.
HAI_HD double edge_coef(const MetapopProblem& p, int64_t t, int64_t i, int64_t e) {
  const int64_t j = p.indices[e];
  const double* m = p.travel + t * p.n_regions;
  return p.weights[e] * edge_travel(m[i], m[j]) / static_cast<double>(p.population[j]);
}

// Away weight of region i on day t: a_i = sum_j w_ij edge_travel(m_i, m_j) (<= 1, checked).
HAI_HD double away_row(const MetapopProblem& p, int64_t t, int64_t i) {
  const double* m = p.travel + t * p.n_regions;
  double row = 0.0;
  for (int64_t e = p.indptr[i]; e < p.indptr[i + 1]; ++e) row += p.weights[e] * edge_travel(m[i], m[p.indices[e]]);
  return row;
}

// Force of infection of cell (i, k) on day t (local to the call): own = I_i/N_i,
// away = sum_j edge_coef * I_j, row = away_row (a_i): the contacts not made away are made at home.
HAI_HD double force(const MetapopProblem& p, int64_t i, int64_t k, int64_t t, double own, double away, double row) {
  const int64_t x = t * p.n_regions + i;
  return p.beta[k] * p.contact[x] * ((1.0 - row) * own + away);
}

// The leap out of a stage with exit rate `rate` (E -> I, I -> out, H -> R) over dt: probability
// rate * dt, not 1 - e^(-rate dt). Entrants join at a sub-step's end and are counted there, so a stay
// lasts 1/p sub-steps on average; p = rate * dt makes that 1/rate days, as in the ODE (1 - e^(-rate dt)
// adds about half a sub-step: with the I stage, an R0 too large by gamma dt / 2, and a larger
// prevalence). The final size is then the ODE's at any dt. Needs rate * dt <= 1 (checked).
HAI_HD rng::Leap sojourn_leap(double rate, double dt) { return rng::Leap::of_probability(rate * dt); }

// One tau-leap of dt days for cell x = i * runs + k; gsub is the global sub-step (RNG counter).
// I is read from i_now (the sub-step's start, which the neighbours' pressure also reads) and the new
// I written to st.i (another buffer, or the same one when the caller has a snapshot of i_now).
// onset / recovery: the constant E -> I and I -> R leaps of this dt (sojourn_leap), with their tables;
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
