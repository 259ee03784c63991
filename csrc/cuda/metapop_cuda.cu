// CUDA kernels of the metapopulation engine: one thread per (region, run) cell; the aggregation over
// the mobility graph is the thread's CSR row, the transitions are the shared metapop_cell.h code.
#include "cuda/metapop_cuda.cuh"
#include "metapop_cell.h"

namespace healthai::cuda {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// away = sum_j edge_coef * v[j, k]; row = metapop::away_row on day t (same order as the CPU gather).
template <typename T>
__device__ double gather(const MetapopProblem& p, int64_t i, int64_t k, int64_t t, const T* v, double* row) {
  double away = 0.0, r = 0.0;
  for (int64_t e = p.indptr[i]; e < p.indptr[i + 1]; ++e) {
    const int64_t j = p.indices[e];
    away += metapop::edge_coef(p, t, i, e) * static_cast<double>(v[j * p.runs + k]);
    r += p.weights[e] * metapop::edge_travel(p.travel[t * p.n_regions + i], p.travel[t * p.n_regions + j]);
  }
  *row = r;
  return away;
}

__global__ void leap_kernel(MetapopProblem p, MetapopState<int32_t> st, const int32_t* snapshot, int64_t t,
                            uint32_t gsub, double dt, bool day_end) {
  const rng::Leap onset = metapop::sojourn_leap(p.sigma, dt), recovery = metapop::sojourn_leap(p.gamma, dt);
  const rng::Leap admit = rng::Leap::of_probability(p.hosp_frac), discharge = metapop::sojourn_leap(p.hosp_rate, dt);
  const rng::DrawTables none;  // no look-up tables on the device: it computes the bits the CPU looks up
  const int64_t x = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (x >= p.n_regions * p.runs) return;
  const int64_t i = x / p.runs, k = x % p.runs;
  double row;
  const double away = gather(p, i, k, t, snapshot, &row);
  const double own = snapshot[x] * (1.0 / static_cast<double>(p.population[i]));
  const double lambda = metapop::force(p, i, k, t, own, away, row);
  metapop::leap(p, st, snapshot, i, k, t, gsub, dt, lambda, onset, recovery, none, none, none, admit, discharge, none,
                none, day_end);
}

__global__ void rk4_stage_kernel(MetapopProblem p, const double* y, const double* k_prev, double* k_cur,
                                 double* sum, int q, double h, int64_t t, double hosp_frac) {
  const int64_t cells = p.n_regions * p.runs;
  const int64_t x = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (x >= cells) return;
  const double c = (q == 0 ? 0.0 : (q == 3 ? 1.0 : 0.5)) * h;
  const double w = (q == 0 || q == 3) ? 1.0 : 2.0;
  const int64_t i = x / p.runs, k = x % p.runs;
  // stage infectious of the neighbours: Z_I = Y_I + c K_prev_I
  double away = 0.0, row = 0.0;
  for (int64_t e = p.indptr[i]; e < p.indptr[i + 1]; ++e) {
    const int64_t j = p.indices[e], xj = j * p.runs + k;
    away += metapop::edge_coef(p, t, i, e) * (y[2 * cells + xj] + c * k_prev[2 * cells + xj]);
    row += p.weights[e] * metapop::edge_travel(p.travel[t * p.n_regions + i], p.travel[t * p.n_regions + j]);
  }
  const double zs = y[x] + c * k_prev[x], ze = y[cells + x] + c * k_prev[cells + x];
  const double zi = y[2 * cells + x] + c * k_prev[2 * cells + x];
  const double zh = y[5 * cells + x] + c * k_prev[5 * cells + x];
  const double lambda = metapop::force(p, i, k, t, zi * (1.0 / static_cast<double>(p.population[i])), away, row);
  double d[metapop::kOdeComponents];
  metapop::rhs(p, i, t, lambda, zs, ze, zi, zh, hosp_frac, d);
  for (int m = 0; m < metapop::kOdeComponents; ++m) {
    k_cur[m * cells + x] = d[m];
    sum[m * cells + x] = (q == 0 ? 0.0 : sum[m * cells + x]) + w * d[m];
  }
}

__global__ void rk4_update_kernel(int64_t n, double* y, const double* sum, double h) {
  const int64_t x = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (x < n) y[x] += h / 6.0 * sum[x];
}

__global__ void peaks_kernel(int64_t cells, int64_t day, const double* y, double* peak_value, int32_t* peak_step) {
  const int64_t x = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (x >= cells) return;
  const double v = y[2 * cells + x];
  if (v > peak_value[x]) {
    peak_value[x] = v;
    peak_step[x] = static_cast<int32_t>(day);
  }
}

}  // namespace

void launch_leap(const MetapopProblem& p, const MetapopState<int32_t>& st, const int32_t* snapshot, int64_t t,
                 uint32_t gsub, double dt, bool day_end, cudaStream_t s) {
  const int64_t cells = p.n_regions * p.runs;
  if (cells > 0) leap_kernel<<<grid_for(cells), kThreads, 0, s>>>(p, st, snapshot, t, gsub, dt, day_end);
}

void launch_rk4_stage(const MetapopProblem& p, const double* y, const double* k_prev, double* k_cur, double* sum,
                      int q, double h, int64_t t, double hosp_frac, cudaStream_t s) {
  const int64_t cells = p.n_regions * p.runs;
  if (cells > 0) rk4_stage_kernel<<<grid_for(cells), kThreads, 0, s>>>(p, y, k_prev, k_cur, sum, q, h, t, hosp_frac);
}

void launch_rk4_update(int64_t n, double* y, const double* sum, double h, cudaStream_t s) {
  if (n > 0) rk4_update_kernel<<<grid_for(n), kThreads, 0, s>>>(n, y, sum, h);
}

void launch_peaks(const MetapopProblem& p, const double* y, double* peak_value, int32_t* peak_step, int64_t t,
                  cudaStream_t s) {
  const int64_t cells = p.n_regions * p.runs;
  if (cells > 0) peaks_kernel<<<grid_for(cells), kThreads, 0, s>>>(cells, p.step0 + t + 1, y, peak_value, peak_step);
}

}  // namespace healthai::cuda
