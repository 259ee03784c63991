// Checks and device dispatch of the metapopulation engine (kernels: cpu/metapop_cpu, cuda/metapop_cuda).
#include "metapop.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cpu/metapop_cpu.h"
#include "metapop_cell.h"
#ifdef HEALTHAI_WITH_CUDA
#include "cuda/metapop_cuda.h"
#endif

namespace healthai {
namespace {

std::string at(const char* name, int64_t k) { return std::string(name) + "[" + std::to_string(k) + "]"; }

void check_schedule(const double* a, const char* name, const MetapopProblem& p, double lo) {
  const int64_t n = p.steps * p.n_regions;
  for (int64_t k = 0; k < n; ++k) {
    if (!std::isfinite(a[k]) || a[k] < lo) {
      throw std::invalid_argument(std::string(name) + "[" + std::to_string(k / p.n_regions) + ", " +
                                  std::to_string(k % p.n_regions) + "]=" + std::to_string(a[k]) +
                                  " must be finite and >= " + std::to_string(lo));
    }
  }
}

}  // namespace

void check_metapop(const MetapopProblem& p) {
  if (p.n_regions <= 0) throw std::invalid_argument("population must hold at least one region");
  if (p.runs <= 0) throw std::invalid_argument("runs must be >= 1, got " + std::to_string(p.runs));
  if (p.steps < 0) throw std::invalid_argument("steps must be >= 0, got " + std::to_string(p.steps));
  if (p.substeps < 1 || p.substeps > 1000) {
    throw std::invalid_argument("substeps must be in [1, 1000], got " + std::to_string(p.substeps));
  }
  if (p.step0 < 0 || p.step0 + p.steps > (int64_t{1} << 31) / p.substeps) {
    throw std::invalid_argument("step0 + steps is out of range: " + std::to_string(p.step0 + p.steps));
  }
  if (p.n_regions >= (int64_t{1} << 32) || p.runs >= (int64_t{1} << 32)) {
    throw std::invalid_argument("n_regions and runs must be < 2^32");
  }
  if (!(std::isfinite(p.sigma) && p.sigma > 0)) throw std::invalid_argument("sigma must be finite and > 0, got " + std::to_string(p.sigma));
  if (!(std::isfinite(p.gamma) && p.gamma > 0)) throw std::invalid_argument("gamma must be finite and > 0, got " + std::to_string(p.gamma));
  if (p.indptr[0] != 0) throw std::invalid_argument("indptr[0] must be 0, got " + std::to_string(p.indptr[0]));
  if (p.indptr[p.n_regions] != p.nnz) {
    throw std::invalid_argument("indptr[-1]=" + std::to_string(p.indptr[p.n_regions]) + " must equal len(indices)=" +
                                std::to_string(p.nnz));
  }
  for (int64_t i = 0; i < p.n_regions; ++i) {  // structure first: the edge loop below trusts it
    if (p.indptr[i + 1] < p.indptr[i] || p.indptr[i + 1] > p.nnz) {
      throw std::invalid_argument("indptr must be non-decreasing within [0, len(indices)=" + std::to_string(p.nnz) +
                                  "]: " + at("indptr", i + 1) + "=" + std::to_string(p.indptr[i + 1]) +
                                  " after " + std::to_string(p.indptr[i]));
    }
  }
  for (int64_t i = 0; i < p.n_regions; ++i) {
    if (p.population[i] <= 0 || p.population[i] > 2000000000) {
      throw std::invalid_argument(at("population", i) + "=" + std::to_string(p.population[i]) + " must be in [1, 2e9]");
    }
    double row = 0.0;
    for (int64_t e = p.indptr[i]; e < p.indptr[i + 1]; ++e) {
      const int64_t j = p.indices[e];
      if (j < 0 || j >= p.n_regions) {
        throw std::out_of_range(at("indices", e) + "=" + std::to_string(j) + " is out of range for " +
                                std::to_string(p.n_regions) + " regions");
      }
      if (j == i) throw std::invalid_argument(at("indices", e) + " is a self-loop of region " + std::to_string(i));
      const double w = p.weights[e];
      if (!std::isfinite(w) || w < 0) throw std::invalid_argument(at("weights", e) + "=" + std::to_string(w) + " must be finite and >= 0");
      row += w;
    }
    if (row > 1.0 + 1e-9) {
      throw std::invalid_argument("weights of region " + std::to_string(i) + " sum to " + std::to_string(row) +
                                  " > 1 (they are the fraction of contacts made away)");
    }
  }
  for (int64_t k = 0; k < p.runs; ++k) {
    if (!std::isfinite(p.beta[k]) || p.beta[k] < 0) throw std::invalid_argument(at("beta", k) + "=" + std::to_string(p.beta[k]) + " must be finite and >= 0");
  }
  check_schedule(p.contact, "contact", p, 0.0);
  check_schedule(p.travel, "travel", p, 0.0);
  check_schedule(p.vacc, "vacc", p, 0.0);
  // travel can only move the contacts that exist: first a region's own multiplier times its weights,
  // then the away weight a_i with each edge's multiplier (metapop_cell.h, edge_travel)
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t t = 0; t < p.steps; ++t) {
      for (int64_t i = 0; i < p.n_regions; ++i) {
        const double s = pass == 0 ? metapop_row_sum(p, i) * p.travel[t * p.n_regions + i] : metapop::away_row(p, t, i);
        if (s > 1.0 + 1e-9) {
          const char* how = pass == 0 ? "" : " (each edge times the smaller multiplier of its ends, the larger if both >= 1)";
          throw std::invalid_argument("travel[" + std::to_string(t) + ", " + std::to_string(i) + "] times the away weight" +
                                      how + " is " + std::to_string(s) + " > 1");
        }
      }
    }
  }
}

double metapop_row_sum(const MetapopProblem& p, int64_t i) {
  double row = 0.0;
  for (int64_t e = p.indptr[i]; e < p.indptr[i + 1]; ++e) row += p.weights[e];
  return row;
}

template <typename T>
void check_metapop_state(const MetapopProblem& p, const MetapopState<T>& st) {
  if (st.h != nullptr) {
    if (!(std::isfinite(p.hosp_frac) && p.hosp_frac >= 0.0 && p.hosp_frac <= 1.0)) {
      throw std::invalid_argument("hosp_frac must be in [0, 1], got " + std::to_string(p.hosp_frac));
    }
    if (!(std::isfinite(p.hosp_rate) && p.hosp_rate > 0.0)) {
      throw std::invalid_argument("hosp_rate must be finite and > 0, got " + std::to_string(p.hosp_rate));
    }
  }
  if constexpr (std::is_integral_v<T>) {  // tau-leaping: the stage exits' probabilities are rate * dt
    const double dt = 1.0 / p.substeps, h_rate = st.h != nullptr ? p.hosp_rate : 0.0;
    const double top = std::fmax(std::fmax(p.sigma, p.gamma), h_rate) * dt;
    if (top > 1.0) {
      throw std::invalid_argument("sigma, gamma and hosp_rate times dt = 1/substeps must be <= 1, got " +
                                  std::to_string(top) + ": use more substeps");
    }
  }
  for (int64_t i = 0; i < p.n_regions; ++i) {
    for (int64_t k = 0; k < p.runs; ++k) {
      const int64_t x = i * p.runs + k;
      const T c[5] = {st.s[x], st.e[x], st.i[x], st.r[x], st.h != nullptr ? st.h[x] : T{0}};
      static const char* names[5] = {"S", "E", "I", "R", "H"};
      double total = 0;
      for (int q = 0; q < 5; ++q) {
        if (!std::isfinite(static_cast<double>(c[q])) || c[q] < 0) {
          throw std::invalid_argument(std::string(names[q]) + "[" + std::to_string(i) + ", " + std::to_string(k) +
                                      "]=" + std::to_string(static_cast<double>(c[q])) + " must be finite and >= 0");
        }
        total += static_cast<double>(c[q]);
      }
      const double n = static_cast<double>(p.population[i]);
      if (std::fabs(total - n) > (std::is_integral_v<T> ? 0.0 : 1e-6 * n)) {
        throw std::invalid_argument(std::string(st.h != nullptr ? "S+E+I+H+R" : "S+E+I+R") + " of region " + std::to_string(i) + ", run " + std::to_string(k) + " is " +
                                    std::to_string(total) + ", not population[" + std::to_string(i) + "]=" +
                                    std::to_string(p.population[i]));
      }
    }
  }
}

template void check_metapop_state<int32_t>(const MetapopProblem&, const MetapopState<int32_t>&);
template void check_metapop_state<double>(const MetapopProblem&, const MetapopState<double>&);

void metapop_stochastic(const MetapopProblem& p, const MetapopState<int32_t>& st, int num_threads) {
  if (p.device == Device::kCUDA) {
#ifdef HEALTHAI_WITH_CUDA
    cuda::metapop_stochastic_cuda(p, st);
    return;
#else
    throw std::invalid_argument("device='cuda' but healthai._native was built without CUDA");
#endif
  }
  cpu::metapop_stochastic_cpu(p, st, num_threads > 0 ? num_threads : get_num_threads());
}

void metapop_deterministic(const MetapopProblem& p, const MetapopState<double>& st, int num_threads) {
  if (p.device == Device::kCUDA) {
#ifdef HEALTHAI_WITH_CUDA
    cuda::metapop_deterministic_cuda(p, st);
    return;
#else
    throw std::invalid_argument("device='cuda' but healthai._native was built without CUDA");
#endif
  }
  cpu::metapop_deterministic_cpu(p, st, num_threads > 0 ? num_threads : get_num_threads());
}

}  // namespace healthai
