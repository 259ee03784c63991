// CUDA kernels of the CSR aggregation and their launches (declared in aggregate_cuda.cuh; the host
// adapters with stream handling, checks and messages are in aggregate_cuda.cpp).
#include <algorithm>
#include <stdexcept>
#include <string>

#include "cuda/aggregate_cuda.cuh"
#include "cuda/atomics.cuh"

namespace healthai::cuda {
namespace {

template <typename T, typename I>
__global__ void forward_kernel(const I* indptr, const I* indices, const T* weights, const T* x, T* out,
                               int64_t* argmax, int64_t batch, int64_t n_rows, int64_t n_cols, int64_t feat,
                               Reduce reduce) {
  HEALTHAI_CUDA_LOOP(k, batch * n_rows * feat) {
    const int64_t f = k % feat, r = (k / feat) % n_rows, b = k / (feat * n_rows);
    const int64_t e0 = indptr[r], e1 = indptr[r + 1];
    const T* xb = x + b * n_cols * feat;
    if (reduce == Reduce::kMax) {
      T best = T(0);
      int64_t arg = -1;
      for (int64_t e = e0; e < e1; ++e) {
        const T v = (weights ? weights[e] : T(1)) * xb[static_cast<int64_t>(indices[e]) * feat + f];
        if (arg < 0 || take_max(v, best)) { best = v; arg = e; }
      }
      out[k] = best;
      if (argmax != nullptr) argmax[k] = arg;
    } else {
      T acc = T(0);
      for (int64_t e = e0; e < e1; ++e) {
        acc += (weights ? weights[e] : T(1)) * xb[static_cast<int64_t>(indices[e]) * feat + f];
      }
      out[k] = (reduce == Reduce::kMean && e1 > e0) ? acc / T(e1 - e0) : acc;
    }
  }
}

template <typename T, typename I>
__global__ void sum_grad_x_kernel(const I* indptr, const I* tptr, const I* trow, const I* teid, const T* weights,
                                  const T* grad_out, T* grad_x, int64_t batch, int64_t n_rows, int64_t n_cols,
                                  int64_t feat, bool mean) {
  HEALTHAI_CUDA_LOOP(k, batch * n_cols * feat) {
    const int64_t f = k % feat, j = (k / feat) % n_cols, b = k / (feat * n_cols);
    T acc = T(0);
    for (int64_t t = tptr[j]; t < tptr[j + 1]; ++t) {
      const int64_t i = trow[t];
      T w = weights ? weights[teid[t]] : T(1);
      if (mean) w /= T(indptr[i + 1] - indptr[i]);
      acc += w * grad_out[(b * n_rows + i) * feat + f];
    }
    grad_x[k] = acc;
  }
}

template <typename T, typename I>
__global__ void max_grad_x_kernel(const I* tptr, const I* trow, const I* teid, const T* weights,
                                  const T* grad_out, const int64_t* argmax, T* grad_x, int64_t batch,
                                  int64_t n_rows, int64_t n_cols, int64_t feat) {
  HEALTHAI_CUDA_LOOP(k, batch * n_cols * feat) {
    const int64_t f = k % feat, j = (k / feat) % n_cols, b = k / (feat * n_cols);
    T acc = T(0);
    for (int64_t t = tptr[j]; t < tptr[j + 1]; ++t) {
      const int64_t o = (b * n_rows + trow[t]) * feat + f;
      if (argmax[o] == static_cast<int64_t>(teid[t])) acc += (weights ? weights[teid[t]] : T(1)) * grad_out[o];
    }
    grad_x[k] = acc;
  }
}

template <typename T, typename I>
__global__ void sum_grad_w_kernel(const I* indptr, const I* indices, const T* grad_out, const T* x, T* grad_w,
                                  int64_t batch, int64_t n_rows, int64_t n_cols, int64_t nnz, int64_t feat,
                                  bool mean) {
  HEALTHAI_CUDA_LOOP(e, nnz) {
    int64_t lo = 0, hi = n_rows;  // the row r with indptr[r] <= e < indptr[r + 1]
    while (hi - lo > 1) {
      const int64_t mid = (lo + hi) / 2;
      if (static_cast<int64_t>(indptr[mid]) <= e) lo = mid; else hi = mid;
    }
    while (lo + 1 < n_rows && static_cast<int64_t>(indptr[lo + 1]) <= e) ++lo;  // skip empty rows
    const int64_t j = indices[e];
    T dot = T(0);
    for (int64_t b = 0; b < batch; ++b) {
      const T* go = grad_out + (b * n_rows + lo) * feat;
      const T* xr = x + (b * n_cols + j) * feat;
      for (int64_t f = 0; f < feat; ++f) dot += go[f] * xr[f];
    }
    grad_w[e] = mean ? dot / T(indptr[lo + 1] - indptr[lo]) : dot;
  }
}

template <typename T, typename I>
__global__ void max_grad_w_kernel(const I* indptr, const I* indices, const T* grad_out, const T* x,
                                  const int64_t* argmax, T* grad_w, int64_t batch, int64_t n_rows, int64_t n_cols,
                                  int64_t feat) {
  HEALTHAI_CUDA_LOOP(k, batch * n_rows * feat) {
    const int64_t e = argmax[k];
    const int64_t f = k % feat, r = (k / feat) % n_rows, b = k / (feat * n_rows);
    // bounds-safe even for an unchecked argmax: only an edge of row r is ever written
    if (e < static_cast<int64_t>(indptr[r]) || e >= static_cast<int64_t>(indptr[r + 1])) continue;
    atomic_add(grad_w + e, grad_out[k] * x[(b * n_cols + static_cast<int64_t>(indices[e])) * feat + f]);
  }
}

template <typename I>
__global__ void check_argmax_kernel(const I* indptr, const int64_t* argmax, int64_t batch, int64_t n_rows,
                                    int64_t feat, unsigned long long* bad) {
  HEALTHAI_CUDA_LOOP(k, batch * n_rows * feat) {
    const int64_t r = (k / feat) % n_rows;
    const uint64_t lo = static_cast<uint64_t>(indptr[r]);
    const uint64_t width = static_cast<uint64_t>(indptr[r + 1]) - lo;
    const int64_t a = argmax[k];
    if (a != -1 && static_cast<uint64_t>(a) - lo >= width) atomic_min_u64(bad, static_cast<unsigned long long>(k));
  }
}

template <typename I>
__global__ void check_kernel(const I* indptr, const I* indices, int64_t n_rows, int64_t n_cols, int64_t nnz,
                             unsigned long long* bad) {
  HEALTHAI_CUDA_LOOP(r, n_rows) {
    if (indptr[r + 1] < indptr[r]) atomic_min_u64(bad, static_cast<unsigned long long>(r));
  }
  HEALTHAI_CUDA_LOOP(e, nnz) {
    if (static_cast<uint64_t>(static_cast<int64_t>(indices[e])) >= static_cast<uint64_t>(n_cols)) {
      atomic_min_u64(bad + 1, static_cast<unsigned long long>(e));
    }
  }
}

}  // namespace

constexpr int kThreads = 256;

static int blocks_for(int64_t n) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 65535 * 8)));
}

static void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

template <typename T, typename I>
void launch_forward(const CsrProblem& p, const T* x, T* out, int64_t* argmax, cudaStream_t s) {
  const int64_t n = p.batch * p.n_rows * p.feat;
  if (n == 0) return;
  forward_kernel<T, I><<<blocks_for(n), kThreads, 0, s>>>(
      static_cast<const I*>(p.indptr), static_cast<const I*>(p.indices), static_cast<const T*>(p.weights), x, out,
      argmax, p.batch, p.n_rows, p.n_cols, p.feat, p.reduce);
  check_launch("aggregate forward kernel launch");
}

template <typename T, typename I>
void launch_grad_x(const CsrProblem& p, const CsrTranspose& t, const T* grad_out, const int64_t* argmax,
                   T* grad_x, cudaStream_t s) {
  const int64_t n = p.batch * p.n_cols * p.feat;
  if (n == 0) return;
  const I* tp = static_cast<const I*>(t.indptr);
  const I* tr = static_cast<const I*>(t.indices);
  const I* te = static_cast<const I*>(t.edge_ids);
  const T* w = static_cast<const T*>(p.weights);
  if (p.reduce == Reduce::kMax) {
    max_grad_x_kernel<T, I><<<blocks_for(n), kThreads, 0, s>>>(tp, tr, te, w, grad_out, argmax, grad_x, p.batch,
                                                               p.n_rows, p.n_cols, p.feat);
  } else {
    sum_grad_x_kernel<T, I><<<blocks_for(n), kThreads, 0, s>>>(static_cast<const I*>(p.indptr), tp, tr, te, w,
                                                               grad_out, grad_x, p.batch, p.n_rows, p.n_cols,
                                                               p.feat, p.reduce == Reduce::kMean);
  }
  check_launch("aggregate grad_x kernel launch");
}

template <typename T, typename I>
void launch_grad_w(const CsrProblem& p, const T* grad_out, const T* x, const int64_t* argmax, T* grad_w,
                   cudaStream_t s) {
  const int64_t n_out = p.batch * p.n_rows * p.feat;
  if (p.nnz == 0 || n_out == 0) return;
  const I* ix = static_cast<const I*>(p.indices);
  if (p.reduce == Reduce::kMax) {
    max_grad_w_kernel<T, I><<<blocks_for(n_out), kThreads, 0, s>>>(static_cast<const I*>(p.indptr), ix, grad_out,
                                                                   x, argmax, grad_w, p.batch, p.n_rows, p.n_cols,
                                                                   p.feat);
  } else {
    sum_grad_w_kernel<T, I><<<blocks_for(p.nnz), kThreads, 0, s>>>(static_cast<const I*>(p.indptr), ix, grad_out,
                                                                   x, grad_w, p.batch, p.n_rows, p.n_cols, p.nnz,
                                                                   p.feat, p.reduce == Reduce::kMean);
  }
  check_launch("aggregate grad_w kernel launch");
}

template <typename I>
void launch_check(const CsrProblem& p, unsigned long long* bad, cudaStream_t s) {
  const int64_t n = std::max<int64_t>(p.n_rows, p.nnz);
  if (n == 0) return;
  check_kernel<I><<<blocks_for(n), kThreads, 0, s>>>(static_cast<const I*>(p.indptr),
                                                     static_cast<const I*>(p.indices), p.n_rows, p.n_cols, p.nnz,
                                                     bad);
  check_launch("aggregate check kernel launch");
}

template <typename I>
void launch_check_argmax(const CsrProblem& p, const int64_t* argmax, unsigned long long* bad, cudaStream_t s) {
  const int64_t n = p.batch * p.n_rows * p.feat;
  if (n == 0) return;
  check_argmax_kernel<I><<<blocks_for(n), kThreads, 0, s>>>(static_cast<const I*>(p.indptr), argmax, p.batch,
                                                            p.n_rows, p.feat, bad);
  check_launch("argmax check kernel launch");
}

#define HEALTHAI_INSTANTIATE(T, I)                                                                      \
  template void launch_forward<T, I>(const CsrProblem&, const T*, T*, int64_t*, cudaStream_t);          \
  template void launch_grad_x<T, I>(const CsrProblem&, const CsrTranspose&, const T*, const int64_t*, T*, \
                                    cudaStream_t);                                                      \
  template void launch_grad_w<T, I>(const CsrProblem&, const T*, const T*, const int64_t*, T*, cudaStream_t);
HEALTHAI_INSTANTIATE(float, int32_t)
HEALTHAI_INSTANTIATE(float, int64_t)
HEALTHAI_INSTANTIATE(double, int32_t)
HEALTHAI_INSTANTIATE(double, int64_t)
#undef HEALTHAI_INSTANTIATE
template void launch_check<int32_t>(const CsrProblem&, unsigned long long*, cudaStream_t);
template void launch_check<int64_t>(const CsrProblem&, unsigned long long*, cudaStream_t);
template void launch_check_argmax<int32_t>(const CsrProblem&, const int64_t*, unsigned long long*, cudaStream_t);
template void launch_check_argmax<int64_t>(const CsrProblem&, const int64_t*, unsigned long long*, cudaStream_t);

}  // namespace healthai::cuda
