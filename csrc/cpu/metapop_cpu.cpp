// CPU metapopulation engine. Each sub-step is one parallel pass over region blocks: the infection
// pressure is a CSR aggregation of I/N over the mobility graph with the runs as the feature
// dimension (read from a snapshot of I), fused with the transitions of the block's cells. Cells
// draw from their own Philox streams, so the result does not depend on the number of threads.
#include "cpu/metapop_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/metapop_leaps.h"
#include "cpu/thread_pool.h"
#include "metapop_cell.h"

namespace healthai::cpu {
namespace {

constexpr int64_t kBlock = 32;  // regions per task

int64_t blocks(const MetapopProblem& p) { return (p.n_regions + kBlock - 1) / kBlock; }

// acc[k] = sum_j edge_coef * v[j, k] for region i on day t; returns metapop::away_row.
template <typename T>
double gather(const MetapopProblem& p, int64_t i, int64_t t, const T* v, double* acc) {
  std::fill(acc, acc + p.runs, 0.0);
  double row = 0.0;
  for (int64_t e = p.indptr[i]; e < p.indptr[i + 1]; ++e) {
    const int64_t j = p.indices[e];
    const double w = metapop::edge_coef(p, t, i, e);
    row += p.weights[e] * metapop::edge_travel(p.travel[t * p.n_regions + i], p.travel[t * p.n_regions + j]);
    const T* src = v + j * p.runs;
    for (int64_t k = 0; k < p.runs; ++k) acc[k] += w * static_cast<double>(src[k]);
  }
  return row;
}

// log_factorial(k) for k < 2^16, computed once (the same bits as the formula; 512 KiB).
const std::vector<double>& log_fact_table() {
  static const std::vector<double> table = [] {
    std::vector<double> t(size_t{1} << 16);
    for (size_t k = 0; k < t.size(); ++k) t[k] = rng::log_factorial(static_cast<double>(k));
    return t;
  }();
  return table;
}

rng::DrawTables general_tables(bool enabled) {
  rng::DrawTables tab;
  if (!enabled) return tab;
  tab.log_fact = log_fact_table().data();
  tab.log_fact_size = static_cast<int64_t>(log_fact_table().size());
  return tab;
}

// The tables of the constant leap t: q^n = det_exp(n log q) over the inversion range (n p < 10, at
// most 4096 entries) and log(p / q), so the E -> I and I -> R draws look up what they would compute.
rng::DrawTables leap_tables(const rng::Leap& t, std::vector<double>& pow_q, bool enabled) {
  rng::DrawTables tab = general_tables(enabled);
  if (!enabled || !(t.p > 0.0 && t.p <= 0.5)) return tab;  // the complementary leap is drawn without tables
  pow_q.resize(static_cast<size_t>(std::min(4096.0, std::ceil(10.0 / t.p))));
  for (size_t n = 0; n < pow_q.size(); ++n) pow_q[n] = rng::det_exp(static_cast<double>(n) * t.log_q);
  tab.pow_q = pow_q.data();
  tab.pow_q_size = static_cast<int64_t>(pow_q.size());
  tab.lpq = rng::det_log(t.p / t.q);
  tab.has_lpq = true;
  return tab;
}

void parallel_copy(const void* src, void* dst, int64_t bytes, int threads) {
  const int64_t chunk = 1 << 20;
  const int64_t n = (bytes + chunk - 1) / chunk;
  parallel_for(n, threads, [&](int64_t c) {
    const int64_t a = c * chunk, len = std::min(chunk, bytes - a);
    std::memcpy(static_cast<char*>(dst) + a, static_cast<const char*>(src) + a, len);
  });
}

// Any non-zero entry among n values (a vectorizable OR-reduction).
bool any_nonzero(const int32_t* v, int64_t n) {
  int32_t acc = 0;
  for (int64_t k = 0; k < n; ++k) acc |= v[k];
  return acc != 0;
}

// acc[k] = sum_j edge_coef * I[j, k] over the neighbours j with some I > 0 (flag infectious[j]) on
// day t: the others add +0.0 to every entry, which leaves the sum's bits unchanged, so skipping them
// gives exactly gather()'s result.
void gather_live(const MetapopProblem& p, int64_t i, int64_t t, const int32_t* v, const uint8_t* infectious,
                 double* acc) {
  std::fill(acc, acc + p.runs, 0.0);
  for (int64_t e = p.indptr[i]; e < p.indptr[i + 1]; ++e) {
    const int64_t j = p.indices[e];
    if (!infectious[j]) continue;
    const double w = metapop::edge_coef(p, t, i, e);
    const int32_t* src = v + j * p.runs;
    for (int64_t k = 0; k < p.runs; ++k) acc[k] += w * static_cast<double>(src[k]);
  }
}

// A region is quiet in a sub-step when no run has E, I (or H) in it or I in a neighbour and nobody is
// vaccinated there: every draw of its cells has n = 0 or probability 0 (no uniform is used), so its
// state stays as it is and the sub-step only carries I = 0 into the other buffer.
bool quiet(const MetapopProblem& p, int64_t i, int64_t t, const uint8_t* infectious, const uint8_t* busy) {
  if (infectious[i] || busy[i] || p.vacc[t * p.n_regions + i] != 0.0) return false;
  for (int64_t e = p.indptr[i]; e < p.indptr[i + 1]; ++e) {
    if (infectious[p.indices[e]]) return false;
  }
  return true;
}

}  // namespace

void metapop_stochastic_cpu(const MetapopProblem& p, const MetapopState<int32_t>& st, int num_threads) {
  const int64_t cells = p.n_regions * p.runs;
  std::fill(st.incidence, st.incidence + cells, 0);
  std::vector<int32_t> scratch(cells);  // I ping-pongs between st.i and scratch: no snapshot copies
  int32_t* i_now = st.i;
  const double dt = 1.0 / p.substeps;
  Leaps L;
  L.onset = metapop::sojourn_leap(p.sigma, dt);
  L.recovery = metapop::sojourn_leap(p.gamma, dt);
  L.admit = rng::Leap::of_probability(p.hosp_frac);
  L.discharge = metapop::sojourn_leap(p.hosp_rate, dt);
  std::vector<double> onset_pow, recovery_pow, discharge_pow, admit_pow;
  const bool tables = p.lookup_tables;
  L.onset_tab = leap_tables(L.onset, onset_pow, tables);
  L.recovery_tab = leap_tables(L.recovery, recovery_pow, tables);
  L.general = general_tables(tables);
  L.discharge_tab = leap_tables(L.discharge, discharge_pow, tables);
  L.admit_tab = leap_tables(L.admit, admit_pow, tables);
  const bool simd = tables && p.simd && avx512_usable();  // the vector kernel reads the tables
  // Peaks only rise: with none below 0 at the start, a quiet region's day (I = 0) never sets one.
  const bool negative_peaks = std::any_of(st.peak_value, st.peak_value + cells, [](int32_t v) { return v < 0; });
  std::vector<double> row(p.n_regions);  // the day's metapop::away_row per region
  // Per region: some I > 0 (infectious) and some E (or H) > 0 (busy), for the state at the start of
  // the sub-step (_now) and the state it writes (_next).
  std::vector<uint8_t> inf_now(p.n_regions), busy_now(p.n_regions), inf_next(p.n_regions), busy_next(p.n_regions);
  // Without look-up tables the CPU does what the CUDA kernels do: every region, every neighbour.
  const bool skip = p.lookup_tables;
  const std::vector<uint8_t> every(skip ? 0 : p.n_regions, 1);
  parallel_for(blocks(p), num_threads, [&](int64_t b) {
    const int64_t end = std::min(p.n_regions, (b + 1) * kBlock);
    for (int64_t i = b * kBlock; i < end; ++i) {
      inf_now[i] = any_nonzero(st.i + i * p.runs, p.runs);
      busy_now[i] = any_nonzero(st.e + i * p.runs, p.runs) || (st.h != nullptr && any_nonzero(st.h + i * p.runs, p.runs));
    }
  });
  for (int64_t t = 0; t < p.steps; ++t) {
    parallel_for(blocks(p), num_threads, [&](int64_t b) {
      for (int64_t i = b * kBlock; i < std::min(p.n_regions, (b + 1) * kBlock); ++i) row[i] = metapop::away_row(p, t, i);
    });
    for (int sub = 0; sub < p.substeps; ++sub) {
      const auto gsub = static_cast<uint32_t>((p.step0 + t) * p.substeps + sub);
      const bool day_end = sub == p.substeps - 1;
      MetapopState<int32_t> out = st;
      out.i = i_now == st.i ? scratch.data() : st.i;
      parallel_for(blocks(p), num_threads, [&](int64_t b) {
        std::vector<double> acc(p.runs);
        const int64_t end = std::min(p.n_regions, (b + 1) * kBlock);
        for (int64_t i = b * kBlock; i < end; ++i) {
          int32_t* i_out = out.i + i * p.runs;
          if (skip && quiet(p, i, t, inf_now.data(), busy_now.data())) {
            std::fill(i_out, i_out + p.runs, 0);
            for (int64_t x = i * p.runs; negative_peaks && day_end && x < (i + 1) * p.runs; ++x) {
              if (st.peak_value[x] < 0) {  // a day ending with I = 0 (peaks start at >= 0 in practice)
                st.peak_value[x] = 0;
                st.peak_step[x] = static_cast<int32_t>(p.step0 + t + 1);
              }
            }
            inf_next[i] = busy_next[i] = 0;
            continue;
          }
          if (simd) {
            leap_region_avx512(p, out, i_now, i, t, gsub, dt, inf_now.data(), row[i], L, day_end);
          } else {
            gather_live(p, i, t, i_now, skip ? inf_now.data() : every.data(), acc.data());
            const double inv_n = 1.0 / static_cast<double>(p.population[i]);
            const int32_t* own = i_now + i * p.runs;
            for (int64_t k = 0; k < p.runs; ++k) {
              const double lambda = metapop::force(p, i, k, t, own[k] * inv_n, acc[k], row[i]);
              metapop::leap(p, out, i_now, i, k, t, gsub, dt, lambda, L.onset, L.recovery, L.onset_tab, L.recovery_tab,
                            L.general, L.admit, L.discharge, L.admit_tab, L.discharge_tab, day_end);
            }
          }
          inf_next[i] = any_nonzero(i_out, p.runs);
          busy_next[i] = any_nonzero(st.e + i * p.runs, p.runs) || (st.h != nullptr && any_nonzero(st.h + i * p.runs, p.runs));
        }
      });
      i_now = out.i;
      std::swap(inf_now, inf_next);
      std::swap(busy_now, busy_next);
    }
  }
  if (i_now != st.i) parallel_copy(i_now, st.i, cells * static_cast<int64_t>(sizeof(int32_t)), num_threads);
}

void metapop_deterministic_cpu(const MetapopProblem& p, const MetapopState<double>& st, int num_threads) {
  const int64_t cells = p.n_regions * p.runs;
  std::fill(st.incidence, st.incidence + cells, 0.0);
  // y: S, E, I, R, C (C = cumulative onsets), H; k_prev / k_cur: stage slopes; sum: weighted slopes.
  constexpr int kC = metapop::kOdeComponents;
  std::vector<double> y(kC * cells, 0.0), k_prev(kC * cells, 0.0), k_cur(kC * cells), sum(kC * cells);
  double* comp[4] = {st.s, st.e, st.i, st.r};
  for (int q = 0; q < 4; ++q) std::copy(comp[q], comp[q] + cells, y.begin() + q * cells);
  if (st.h != nullptr) std::copy(st.h, st.h + cells, y.begin() + 5 * cells);
  const double hosp_frac = st.h != nullptr ? p.hosp_frac : 0.0;
  const double h = 1.0 / p.substeps;
  static const double c_stage[4] = {0.0, 0.5, 0.5, 1.0}, w_stage[4] = {1.0, 2.0, 2.0, 1.0};
  std::vector<double> zi(cells);
  for (int64_t t = 0; t < p.steps; ++t) {
    for (int sub = 0; sub < p.substeps; ++sub) {
      for (int q = 0; q < 4; ++q) {
        const double c = c_stage[q] * h;
        // stage infectious Z_I = Y_I + c * K_prev_I, for the aggregation
        parallel_for(blocks(p), num_threads, [&](int64_t b) {
          const int64_t end = std::min(p.n_regions, (b + 1) * kBlock) * p.runs;
          for (int64_t x = b * kBlock * p.runs; x < end; ++x) zi[x] = y[2 * cells + x] + c * k_prev[2 * cells + x];
        });
        parallel_for(blocks(p), num_threads, [&](int64_t b) {
          std::vector<double> acc(p.runs);
          const int64_t end = std::min(p.n_regions, (b + 1) * kBlock);
          for (int64_t i = b * kBlock; i < end; ++i) {
            const double row = gather(p, i, t, zi.data(), acc.data());
            const double inv_n = 1.0 / static_cast<double>(p.population[i]);
            for (int64_t k = 0; k < p.runs; ++k) {
              const int64_t x = i * p.runs + k;
              const double zs = y[x] + c * k_prev[x], ze = y[cells + x] + c * k_prev[cells + x];
              const double zh = y[5 * cells + x] + c * k_prev[5 * cells + x];
              const double lambda = metapop::force(p, i, k, t, zi[x] * inv_n, acc[k], row);
              double d[kC];
              metapop::rhs(p, i, t, lambda, zs, ze, zi[x], zh, hosp_frac, d);
              for (int m = 0; m < kC; ++m) {
                k_cur[m * cells + x] = d[m];
                sum[m * cells + x] = (q == 0 ? 0.0 : sum[m * cells + x]) + w_stage[q] * d[m];
              }
            }
          }
        });
        std::swap(k_prev, k_cur);
      }
      parallel_for(kC * blocks(p), num_threads, [&](int64_t b) {
        const int64_t m = b / blocks(p), blk = b % blocks(p);
        const int64_t end = m * cells + std::min(p.n_regions, (blk + 1) * kBlock) * p.runs;
        for (int64_t x = m * cells + blk * kBlock * p.runs; x < end; ++x) y[x] += h / 6.0 * sum[x];
      });
    }
    for (int64_t x = 0; x < cells; ++x) {  // day end: peaks
      const double iv = y[2 * cells + x];
      if (iv > st.peak_value[x]) {
        st.peak_value[x] = iv;
        st.peak_step[x] = static_cast<int32_t>(p.step0 + t + 1);
      }
    }
  }
  for (int q = 0; q < 4; ++q) std::copy(y.begin() + q * cells, y.begin() + (q + 1) * cells, comp[q]);
  std::copy(y.begin() + 4 * cells, y.begin() + 5 * cells, st.incidence);
  if (st.h != nullptr) std::copy(y.begin() + 5 * cells, y.end(), st.h);
}

}  // namespace healthai::cpu
