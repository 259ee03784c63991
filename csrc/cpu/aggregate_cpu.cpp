// CPU entry points: split rows between threads (balanced by edges), pick the AVX2 or generic kernels.
#include "cpu/aggregate_cpu.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <utility>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/thread_pool.h"

namespace healthai::cpu {

#define HEALTHAI_DECLARE_KERNELS(ns)                                                                      \
  namespace ns {                                                                                         \
  void forward_rows(const CsrProblem& p, const void* x, void* out, int64_t* argmax, int64_t r0, int64_t r1); \
  void max_grad_x(const CsrProblem& p, const CsrTranspose& t, const void* grad_out, const int64_t* argmax,  \
                  void* grad_x, int64_t c0, int64_t c1);                                                  \
  void grad_w(const CsrProblem& p, const void* grad_out, const void* x, const int64_t* argmax,            \
              void* grad_w_out, int64_t r0, int64_t r1);                                                  \
  }
HEALTHAI_DECLARE_KERNELS(avx2)
HEALTHAI_DECLARE_KERNELS(generic)
#undef HEALTHAI_DECLARE_KERNELS

namespace {

struct Kernels {
  decltype(&generic::forward_rows) forward_rows;
  decltype(&generic::max_grad_x) max_grad_x;
  decltype(&generic::grad_w) grad_w;
};

const Kernels& kernels() {
  static const Kernels k = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      return Kernels{avx2::forward_rows, avx2::max_grad_x, avx2::grad_w};
    }
    return Kernels{generic::forward_rows, generic::max_grad_x, generic::grad_w};
  }();
  return k;
}

constexpr int64_t kWorkPerThread = 1 << 16;  // multiply-adds below which another thread is not worth it
constexpr int kChunksPerThread = 16;

template <typename I>
int64_t edge_at(const void* indptr, int64_t r) {
  return static_cast<int64_t>(static_cast<const I*>(indptr)[r]);
}

int64_t edge_at(const CsrProblem& p, int64_t r) {
  return p.index_type == DType::kInt32 ? edge_at<int32_t>(p.indptr, r) : edge_at<int64_t>(p.indptr, r);
}

// Runs fn(begin, end) over row chunks of `p` in parallel. Each thread takes the next of
// kChunksPerThread * threads edge-balanced chunks, so a thread the OS delays (shared machine) does not
// hold up the others.
template <typename Fn>
void for_row_chunks(const CsrProblem& p, int num_threads, Fn&& fn) {
  const int64_t work = (p.nnz + p.n_rows) * std::max<int64_t>(p.feat, 1) * p.batch;
  const int n = useful_threads(work, num_threads);
  if (n == 1) {
    fn(int64_t{0}, p.n_rows);
    return;
  }
  const int64_t max_chunks = std::max<int64_t>(1, work / kWorkPerThread);
  const int chunks = static_cast<int>(std::min<int64_t>(int64_t{n} * kChunksPerThread, max_chunks));
  const std::vector<int64_t> bounds = balanced_row_chunks(p, chunks);
  parallel_for(chunks, n, [&](int64_t k) {
    if (bounds[k] < bounds[k + 1]) fn(bounds[k], bounds[k + 1]);
  });
}

}  // namespace

int useful_threads(int64_t work, int num_threads) {
  int64_t n = std::max<int64_t>(1, work / kWorkPerThread);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(n, num_threads)));
}

std::vector<int64_t> balanced_row_chunks(const CsrProblem& p, int n_tasks) {
  // Work of rows [0, r) is indptr[r] + r: every edge and every row costs one unit.
  std::vector<int64_t> bounds(n_tasks + 1, p.n_rows);
  bounds[0] = 0;
  const int64_t total = p.nnz + p.n_rows;
  for (int k = 1; k < n_tasks; ++k) {
    const int64_t target = total * k / n_tasks;
    int64_t lo = bounds[k - 1], hi = p.n_rows;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (edge_at(p, mid) + mid < target) lo = mid + 1; else hi = mid;
    }
    bounds[k] = lo;
  }
  return bounds;
}

void forward_rows_cpu(const CsrProblem& p, const void* x, void* out, int64_t* argmax, int64_t r0, int64_t r1) {
  kernels().forward_rows(p, x, out, argmax, r0, r1);
}

void aggregate_forward_cpu(const CsrProblem& p, const void* x, void* out, int64_t* argmax, int num_threads) {
  if (p.n_rows == 0 || p.feat == 0 || p.batch == 0) return;
  const Kernels& k = kernels();
  for_row_chunks(p, num_threads, [&](int64_t r0, int64_t r1) { k.forward_rows(p, x, out, argmax, r0, r1); });
}

namespace {

// Per-entry weights of A^T for the sum/mean backward: w[edge_ids[t]] / (mean ? row count : 1).
template <typename T, typename I>
std::unique_ptr<T[]> transposed_weights(const CsrProblem& p, const CsrTranspose& t, int num_threads) {
  const I* indptr = static_cast<const I*>(p.indptr);
  const I* trow = static_cast<const I*>(t.indices);
  const I* teid = static_cast<const I*>(t.edge_ids);
  const T* w = static_cast<const T*>(p.weights);
  std::unique_ptr<T[]> tw(new T[p.nnz]);  // uninitialised: every entry is written below
  const int threads = useful_threads(p.nnz * 8, num_threads);
  const int64_t n = int64_t{threads} * kChunksPerThread;
  parallel_for(n, threads, [&](int64_t k) {
    for (int64_t i = p.nnz * k / n; i < p.nnz * (k + 1) / n; ++i) {
      T v = w ? w[teid[i]] : T(1);
      if (p.reduce == Reduce::kMean) v /= T(indptr[trow[i] + 1] - indptr[trow[i]]);
      tw[i] = v;
    }
  });
  return tw;
}

template <typename T, typename I>
void sum_grad_x(const CsrProblem& p, const CsrTranspose& t, const void* grad_out, void* grad_x, int num_threads) {
  std::unique_ptr<T[]> tw;
  CsrProblem pt = p;  // A^T as a sum problem over grad_out
  pt.indptr = t.indptr;
  pt.indices = t.indices;
  pt.n_rows = p.n_cols;
  pt.n_cols = p.n_rows;
  pt.reduce = Reduce::kSum;
  pt.weights = nullptr;
  if (p.weights != nullptr || p.reduce == Reduce::kMean) {
    tw = transposed_weights<T, I>(p, t, num_threads);
    pt.weights = tw.get();
  }
  aggregate_forward_cpu(pt, grad_out, grad_x, nullptr, num_threads);
}

}  // namespace

void aggregate_backward_cpu(const CsrProblem& p, const CsrTranspose& t, const void* grad_out, const void* x,
                            const int64_t* argmax, void* grad_x, void* grad_w, int num_threads) {
  const Kernels& k = kernels();
  if (grad_x != nullptr && p.n_cols > 0 && p.feat > 0 && p.batch > 0) {
    if (p.reduce == Reduce::kMax) {
      CsrProblem pt = p;  // chunk the columns by the transpose's entries
      pt.indptr = t.indptr;
      pt.n_rows = p.n_cols;
      for_row_chunks(pt, num_threads, [&](int64_t c0, int64_t c1) {
        k.max_grad_x(p, t, grad_out, argmax, grad_x, c0, c1);
      });
    } else {
      const bool f32 = p.scalar_type == DType::kFloat32, i32 = p.index_type == DType::kInt32;
      if (f32 && i32) sum_grad_x<float, int32_t>(p, t, grad_out, grad_x, num_threads);
      else if (f32) sum_grad_x<float, int64_t>(p, t, grad_out, grad_x, num_threads);
      else if (i32) sum_grad_x<double, int32_t>(p, t, grad_out, grad_x, num_threads);
      else sum_grad_x<double, int64_t>(p, t, grad_out, grad_x, num_threads);
    }
  }
  if (grad_w != nullptr && p.nnz > 0) {
    if (p.feat == 0 || p.batch == 0) {
      const size_t bytes = (p.scalar_type == DType::kFloat32 ? 4 : 8) * static_cast<size_t>(p.nnz);
      std::fill_n(static_cast<char*>(grad_w), bytes, 0);
      return;
    }
    for_row_chunks(p, num_threads, [&](int64_t r0, int64_t r1) { k.grad_w(p, grad_out, x, argmax, grad_w, r0, r1); });
  }
}

namespace {

template <typename I>
void transpose_t(const CsrProblem& p, I* tptr, I* trow, I* teid) {
  const I* indptr = static_cast<const I*>(p.indptr);
  const I* idx = static_cast<const I*>(p.indices);
  std::fill_n(tptr, p.n_cols + 1, I(0));
  for (int64_t e = 0; e < p.nnz; ++e) ++tptr[idx[e] + 1];
  for (int64_t j = 0; j < p.n_cols; ++j) tptr[j + 1] += tptr[j];
  std::vector<I> next(tptr, tptr + p.n_cols);
  for (int64_t r = 0; r < p.n_rows; ++r) {
    for (I e = indptr[r]; e < indptr[r + 1]; ++e) {
      const I slot = next[idx[e]]++;
      trow[slot] = static_cast<I>(r);
      teid[slot] = e;
    }
  }
}

template <typename I>
void check_indptr_t(const CsrProblem& p) {
  const I* indptr = static_cast<const I*>(p.indptr);
  if (indptr[0] != 0) {
    throw std::invalid_argument("indptr[0] must be 0, got " + std::to_string(indptr[0]));
  }
  for (int64_t r = 0; r < p.n_rows; ++r) {
    if (indptr[r + 1] < indptr[r]) {
      throw std::invalid_argument("indptr must be non-decreasing: indptr[" + std::to_string(r) + "]=" +
                                  std::to_string(indptr[r]) + " > indptr[" + std::to_string(r + 1) +
                                  "]=" + std::to_string(indptr[r + 1]));
    }
  }
  if (static_cast<int64_t>(indptr[p.n_rows]) != p.nnz) {
    throw std::invalid_argument("indptr[-1]=" + std::to_string(indptr[p.n_rows]) +
                                " must equal len(indices)=" + std::to_string(p.nnz));
  }
}

// Scans indices in parallel chunks: the first edge e with indices[e] outside [0, limit) (-1: none)
// and, with kMax, the largest index seen (-1 without edges; only meaningful when none is outside).
template <typename I, bool kMax>
std::pair<int64_t, int64_t> scan_indices(const CsrProblem& p, uint64_t limit, int num_threads) {
  const I* idx = static_cast<const I*>(p.indices);
  const int threads = useful_threads(p.nnz * 4, num_threads);
  const int64_t n = int64_t{threads} * kChunksPerThread;
  std::vector<int64_t> first_bad(n, -1), max_seen(n, -1);
  parallel_for(n, threads, [&](int64_t k) {
    int64_t hi = -1;
    for (int64_t e = p.nnz * k / n; e < p.nnz * (k + 1) / n; ++e) {
      const int64_t v = static_cast<int64_t>(idx[e]);
      // one unsigned compare catches negative and too large ids
      if (static_cast<uint64_t>(v) >= limit) { first_bad[k] = e; return; }
      if constexpr (kMax) hi = v > hi ? v : hi;
    }
    max_seen[k] = hi;
  });
  for (int64_t e : first_bad) {
    if (e >= 0) return {e, -1};
  }
  return {-1, *std::max_element(max_seen.begin(), max_seen.end())};
}

template <typename I>
void check_values_t(const CsrProblem& p, int num_threads) {
  check_indptr_t<I>(p);
  const int64_t e = scan_indices<I, false>(p, static_cast<uint64_t>(p.n_cols), num_threads).first;
  if (e >= 0) {
    throw std::out_of_range("indices[" + std::to_string(e) + "]=" +
                            std::to_string(static_cast<const I*>(p.indices)[e]) + " is out of range for " +
                            std::to_string(p.n_cols) + " nodes (x.shape[-2])");
  }
}

template <typename I>
int64_t check_graph_t(const CsrProblem& p, int num_threads) {
  check_indptr_t<I>(p);
  const auto [e, max_index] = scan_indices<I, true>(p, static_cast<uint64_t>(INT64_MAX) + 1, num_threads);
  if (e >= 0) {
    throw std::out_of_range("indices[" + std::to_string(e) + "]=" +
                            std::to_string(static_cast<const I*>(p.indices)[e]) + " is negative (node ids are >= 0)");
  }
  return max_index;
}

}  // namespace

void csr_transpose_cpu(const CsrProblem& p, void* t_indptr, void* t_indices, void* t_edge_ids) {
  if (p.index_type == DType::kInt32) {
    transpose_t<int32_t>(p, static_cast<int32_t*>(t_indptr), static_cast<int32_t*>(t_indices),
                         static_cast<int32_t*>(t_edge_ids));
  } else {
    transpose_t<int64_t>(p, static_cast<int64_t*>(t_indptr), static_cast<int64_t*>(t_indices),
                         static_cast<int64_t*>(t_edge_ids));
  }
}

void check_values_cpu(const CsrProblem& p, int num_threads) {
  if (p.index_type == DType::kInt32) check_values_t<int32_t>(p, num_threads);
  else check_values_t<int64_t>(p, num_threads);
}

int64_t check_graph_cpu(const CsrProblem& p, int num_threads) {
  return p.index_type == DType::kInt32 ? check_graph_t<int32_t>(p, num_threads) : check_graph_t<int64_t>(p, num_threads);
}

namespace {

// Rows [r0, r1) of every batch item: the first entry (lowest flat position) outside {-1} u [lo, hi).
template <typename I>
int64_t first_bad_argmax(const CsrProblem& p, const int64_t* argmax, int64_t r0, int64_t r1) {
  const I* indptr = static_cast<const I*>(p.indptr);
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint64_t lo = static_cast<uint64_t>(indptr[r]);
      const uint64_t width = static_cast<uint64_t>(indptr[r + 1]) - lo;
      const int64_t* a = argmax + (b * p.n_rows + r) * p.feat;
      for (int64_t f = 0; f < p.feat; ++f) {
        // one unsigned compare for lo <= a < hi (no signed overflow); -1 is always allowed
        if (a[f] != -1 && static_cast<uint64_t>(a[f]) - lo >= width) return (b * p.n_rows + r) * p.feat + f;
      }
    }
  }
  return -1;
}

}  // namespace

ArgmaxFault check_argmax_cpu(const CsrProblem& p, const int64_t* argmax, int num_threads) {
  ArgmaxFault fault;
  if (p.batch * p.n_rows * p.feat == 0) return fault;
  const bool i32 = p.index_type == DType::kInt32;
  const int threads = useful_threads(p.batch * p.n_rows * p.feat, num_threads);
  const int64_t n = int64_t{threads} * kChunksPerThread;
  std::vector<int64_t> first_bad(n, -1);
  parallel_for(n, threads, [&](int64_t k) {
    const int64_t r0 = p.n_rows * k / n, r1 = p.n_rows * (k + 1) / n;
    first_bad[k] = i32 ? first_bad_argmax<int32_t>(p, argmax, r0, r1) : first_bad_argmax<int64_t>(p, argmax, r0, r1);
  });
  for (int64_t at : first_bad) {
    if (at >= 0 && (fault.at < 0 || at < fault.at)) fault.at = at;
  }
  if (fault.at >= 0) {
    const int64_t r = (fault.at / p.feat) % p.n_rows;
    fault.value = argmax[fault.at];
    fault.row_begin = edge_at(p, r);
    fault.row_end = edge_at(p, r + 1);
  }
  return fault;
}

}  // namespace healthai::cpu
