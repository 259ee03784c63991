// Metapopulation SEIR engine: shared problem type, value checks and the device-dispatching step.
// Model per region i and run k (W = CSR mobility weights: w_ij the fraction of i's residents' contacts
// made in j, row sums <= 1, self excluded; m_i(t) travel and c_i(t) contact multipliers):
//   force  lambda = beta_k * c_i * ((1 - a_i) I_i/N_i + sum_j w_ij f_ij I_j/N_j),  a_i = sum_j w_ij f_ij
// with f_ij = min(m_i, m_j) when that is < 1, else max(m_i, m_j) (metapop_cell.h, edge_travel): a
// region's travel multiplier scales its mobility edges both ways, its residents' contacts elsewhere
// and other residents' contacts in it; the contacts not made away are made at home; m_r = 0 cuts r off.
//   S -> E at lambda, E -> I at sigma, I leaves at gamma, S -> R (vaccination) at vacc_i(t).
// Optional hospital compartment H (state.h given): a fraction hosp_frac of those leaving I enter H
// (not infectious), the rest R; H -> R at hosp_rate. Without H, everyone leaving I enters R.
// Stochastic mode: tau-leaping with binomial transitions (integer compartments, S+E+I+R = N kept
// exactly); S -> E and vaccination with probability 1 - e^(-rate dt), the stage exits (E -> I, I out,
// H -> R) with rate * dt (metapop_cell.h, sojourn_leap): mean stays of 1/rate and the ODE's final size. Deterministic mode: the same equations as an
// ODE, classical RK4.
#pragma once

#include <cstdint>

#include "aggregate.h"

namespace healthai {

struct MetapopProblem {
  int64_t n_regions = 0, runs = 0, nnz = 0;
  int64_t steps = 0;     // days advanced by this call
  int64_t step0 = 0;     // global day index of the first step (RNG counter and peak timing)
  int substeps = 1;      // tau-leaping / RK4 sub-steps per day
  const int64_t* indptr = nullptr;      // [n_regions + 1]
  const int64_t* indices = nullptr;     // [nnz]
  const double* weights = nullptr;      // [nnz]
  const int64_t* population = nullptr;  // [n_regions]
  const double* beta = nullptr;         // [runs]
  double sigma = 0.0, gamma = 0.0;
  double hosp_frac = 0.0, hosp_rate = 0.0;  // used only with state.h
  const double* contact = nullptr;  // [steps, n_regions]
  const double* travel = nullptr;   // [steps, n_regions]
  const double* vacc = nullptr;     // [steps, n_regions] per-day rate
  uint64_t seed = 0;
  Device device = Device::kCPU;
  // CPU: look up q^n, log(k!) and log(p/q) in tables of the values the formulas give (the CUDA
  // kernels compute them) and skip quiet regions and I = 0 neighbours; false computes everything,
  // every region, as the device does, which must give the same bits (tested).
  bool lookup_tables = true;
  // CPU: the AVX-512 transitions (eight runs per vector, the same bits) where the CPU has AVX-512 F
  // and DQ and lookup_tables is on; false keeps the scalar code (tests compare the two).
  bool simd = true;
};

// Compartments [n_regions, runs] each, updated in place; incidence (E -> I over the call) is written;
// peak_value / peak_step (largest I seen at a day's end and its global day) are updated.
template <typename T>
struct MetapopState {
  T* s = nullptr;
  T* e = nullptr;
  T* i = nullptr;
  T* r = nullptr;
  T* h = nullptr;  // optional hospital compartment
  T* incidence = nullptr;
  T* peak_value = nullptr;
  int32_t* peak_step = nullptr;
};

// Value checks (host memory, before any work): graph structure, rates, schedules and, for integer
// state, S+E+I(+H)+R = N with non-negative entries. Throws std::invalid_argument / std::out_of_range
// naming the argument, the position and the value.
void check_metapop(const MetapopProblem& p);
// Sum of the away weights of region i (s_i, without travel multipliers).
double metapop_row_sum(const MetapopProblem& p, int64_t i);
template <typename T>
void check_metapop_state(const MetapopProblem& p, const MetapopState<T>& st);

void metapop_stochastic(const MetapopProblem& p, const MetapopState<int32_t>& st, int num_threads);
void metapop_deterministic(const MetapopProblem& p, const MetapopState<double>& st, int num_threads);

}  // namespace healthai
