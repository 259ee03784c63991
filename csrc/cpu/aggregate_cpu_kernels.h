// Row kernels of the CPU aggregation. This header is compiled twice (aggregate_cpu_avx2.cpp with
// -mavx2 -mfma, aggregate_cpu_generic.cpp without); HEALTHAI_ISA names the namespace of each copy.
// Each function handles rows [r0, r1) of every batch; callers split rows between threads.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "aggregate.h"

namespace healthai::cpu::HEALTHAI_ISA {

namespace {

constexpr int64_t kPrefetchEdges = 16;  // fetch the row of edge e + 16 while working on edge e
constexpr int kBlockBytes = 256;       // feature block kept in registers: 64 floats / 32 doubles

template <typename T>
inline void prefetch_block(const T* p, int64_t n) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t off = 0; off < n * static_cast<int64_t>(sizeof(T)); off += 64) __builtin_prefetch(c + off);
}

inline bool take_max(double v, double best) { return v > best || (std::isnan(v) && !std::isnan(best)); }
inline bool take_max(float v, float best) { return v > best || (std::isnan(v) && !std::isnan(best)); }

// 32-byte SIMD vectors (GCC/Clang vector extensions): ymm registers with -mavx2, xmm pairs without.
template <typename T>
struct Vec32;
template <>
struct Vec32<float> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct Vec32<double> {
  typedef double type __attribute__((vector_size(32)));
};

// out[f0:f0+B] = scale * sum_e w[e] * x[idx[e], f0:f0+B] for one row; the B accumulators stay in
// registers (B / lanes vectors) while the row's edges stream by.
template <typename T, typename I, bool kWeighted, int B>
inline void sum_block(const I* idx, const T* w, int64_t e0, int64_t e1, int64_t e_end, const T* x, int64_t F,
                      int64_t f0, T scale, T* out) {
  using V = typename Vec32<T>::type;
  constexpr int kLanes = 32 / sizeof(T);
  constexpr int kVecs = B / kLanes;
  V acc[kVecs];
#pragma GCC unroll 16
  for (int k = 0; k < kVecs; ++k) acc[k] = V{};
  for (int64_t e = e0; e < e1; ++e) {
    if (e + kPrefetchEdges < e_end) prefetch_block(x + static_cast<int64_t>(idx[e + kPrefetchEdges]) * F + f0, B);
    const T* xr = x + static_cast<int64_t>(idx[e]) * F + f0;
    const T wv = kWeighted ? w[e] : T(1);
#pragma GCC unroll 16
    for (int k = 0; k < kVecs; ++k) {
      V xv;
      std::memcpy(&xv, xr + k * kLanes, sizeof(V));  // unaligned load
      acc[k] += wv * xv;
    }
  }
#pragma GCC unroll 16
  for (int k = 0; k < kVecs; ++k) {
    const V r = acc[k] * scale;
    std::memcpy(out + f0 + k * kLanes, &r, sizeof(V));
  }
}

template <typename T, typename I, bool kWeighted>
inline void sum_tail(const I* idx, const T* w, int64_t e0, int64_t e1, const T* x, int64_t F, int64_t f0,
                     int64_t nb, T scale, T* out) {
  for (int64_t f = 0; f < nb; ++f) out[f0 + f] = T(0);
  for (int64_t e = e0; e < e1; ++e) {
    const T* xr = x + static_cast<int64_t>(idx[e]) * F + f0;
    const T wv = kWeighted ? w[e] : T(1);
    for (int64_t f = 0; f < nb; ++f) out[f0 + f] += wv * xr[f];
  }
  for (int64_t f = 0; f < nb; ++f) out[f0 + f] *= scale;
}

template <typename T, typename I, bool kWeighted>
void sum_rows(const CsrProblem& p, const T* x, T* out, int64_t r0, int64_t r1) {
  constexpr int B = kBlockBytes / sizeof(T);
  const I* indptr = static_cast<const I*>(p.indptr);
  const I* idx = static_cast<const I*>(p.indices);
  const T* w = static_cast<const T*>(p.weights);
  const int64_t F = p.feat;
  const int64_t e_end = indptr[r1];
  for (int64_t b = 0; b < p.batch; ++b) {
    const T* xb = x + b * p.n_cols * F;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t e0 = indptr[r], e1 = indptr[r + 1];
      T* o = out + (b * p.n_rows + r) * F;
      const T scale = (p.reduce == Reduce::kMean && e1 > e0) ? T(1) / T(e1 - e0) : T(1);
      int64_t f0 = 0;
      for (; f0 + B <= F; f0 += B) sum_block<T, I, kWeighted, B>(idx, w, e0, e1, e_end, xb, F, f0, scale, o);
      if (f0 < F && F - f0 >= B / 4 && (F - f0) % (B / 4) == 0) {
        for (; f0 < F; f0 += B / 4) sum_block<T, I, kWeighted, B / 4>(idx, w, e0, e1, e_end, xb, F, f0, scale, o);
      }
      if (f0 < F) sum_tail<T, I, kWeighted>(idx, w, e0, e1, xb, F, f0, F - f0, scale, o);
    }
  }
}

// argmax may be nullptr (ONNX Runtime needs no backward): kArg says whether to record it.
template <typename T, typename I, bool kWeighted, bool kArg>
void max_rows(const CsrProblem& p, const T* x, T* out, int64_t* argmax, int64_t r0, int64_t r1) {
  const I* indptr = static_cast<const I*>(p.indptr);
  const I* idx = static_cast<const I*>(p.indices);
  const T* w = static_cast<const T*>(p.weights);
  const int64_t F = p.feat;
  const int64_t e_end = indptr[r1];
  for (int64_t b = 0; b < p.batch; ++b) {
    const T* xb = x + b * p.n_cols * F;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t e0 = indptr[r], e1 = indptr[r + 1];
      T* o = out + (b * p.n_rows + r) * F;
      int64_t* a = kArg ? argmax + (b * p.n_rows + r) * F : nullptr;
      if (e0 == e1) {
        for (int64_t f = 0; f < F; ++f) o[f] = T(0);
        if constexpr (kArg) for (int64_t f = 0; f < F; ++f) a[f] = -1;
        continue;
      }
      {
        const T* xr = xb + static_cast<int64_t>(idx[e0]) * F;
        const T wv = kWeighted ? w[e0] : T(1);
        for (int64_t f = 0; f < F; ++f) o[f] = wv * xr[f];
        if constexpr (kArg) for (int64_t f = 0; f < F; ++f) a[f] = e0;
      }
      for (int64_t e = e0 + 1; e < e1; ++e) {
        if (e + kPrefetchEdges < e_end) prefetch_block(xb + static_cast<int64_t>(idx[e + kPrefetchEdges]) * F, F);
        const T* xr = xb + static_cast<int64_t>(idx[e]) * F;
        const T wv = kWeighted ? w[e] : T(1);
        for (int64_t f = 0; f < F; ++f) {
          const T v = wv * xr[f];
          if (take_max(v, o[f])) {
            o[f] = v;
            if constexpr (kArg) a[f] = e;
          }
        }
      }
    }
  }
}

// grad_x[b, j, f] = sum over entries t of column j whose row i chose edge e = edge_ids[t] for (b, i, f).
template <typename T, typename I, bool kWeighted>
void max_grad_x_cols(const CsrProblem& p, const CsrTranspose& t, const T* grad_out, const int64_t* argmax,
                     T* grad_x, int64_t c0, int64_t c1) {
  const I* tptr = static_cast<const I*>(t.indptr);
  const I* trow = static_cast<const I*>(t.indices);
  const I* teid = static_cast<const I*>(t.edge_ids);
  const T* w = static_cast<const T*>(p.weights);
  const int64_t F = p.feat;
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t j = c0; j < c1; ++j) {
      T* g = grad_x + (b * p.n_cols + j) * F;
      for (int64_t f = 0; f < F; ++f) g[f] = T(0);
      for (int64_t k = tptr[j]; k < tptr[j + 1]; ++k) {
        const int64_t i = trow[k], e = teid[k];
        const T wv = kWeighted ? w[e] : T(1);
        const T* go = grad_out + (b * p.n_rows + i) * F;
        const int64_t* a = argmax + (b * p.n_rows + i) * F;
        for (int64_t f = 0; f < F; ++f) g[f] += (a[f] == e) ? wv * go[f] : T(0);
      }
    }
  }
}

// grad_w[e] for rows [r0, r1): sum/mean: <grad_out[b, i], x[b, j]> * scale; max: only the chosen (b, f).
template <typename T, typename I>
void grad_w_rows(const CsrProblem& p, const T* grad_out, const T* x, const int64_t* argmax, T* grad_w,
                 int64_t r0, int64_t r1) {
  const I* indptr = static_cast<const I*>(p.indptr);
  const I* idx = static_cast<const I*>(p.indices);
  const int64_t F = p.feat;
  for (int64_t e = indptr[r0]; e < indptr[r1]; ++e) grad_w[e] = T(0);
  for (int64_t b = 0; b < p.batch; ++b) {
    const T* xb = x + b * p.n_cols * F;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t e0 = indptr[r], e1 = indptr[r + 1];
      const T* go = grad_out + (b * p.n_rows + r) * F;
      if (p.reduce == Reduce::kMax) {
        const int64_t* a = argmax + (b * p.n_rows + r) * F;
        for (int64_t f = 0; f < F; ++f) {
          if (a[f] >= 0) grad_w[a[f]] += go[f] * xb[static_cast<int64_t>(idx[a[f]]) * F + f];
        }
        continue;
      }
      const T scale = (p.reduce == Reduce::kMean && e1 > e0) ? T(1) / T(e1 - e0) : T(1);
      for (int64_t e = e0; e < e1; ++e) {
        const T* xr = xb + static_cast<int64_t>(idx[e]) * F;
        T dot = T(0);
        for (int64_t f = 0; f < F; ++f) dot += go[f] * xr[f];
        grad_w[e] += dot * scale;
      }
    }
  }
}

template <typename T, typename I>
void forward_rows_t(const CsrProblem& p, const void* x, void* out, int64_t* argmax, int64_t r0, int64_t r1) {
  const T* xs = static_cast<const T*>(x);
  T* o = static_cast<T*>(out);
  const bool weighted = p.weights != nullptr;
  if (p.reduce == Reduce::kMax) {
    if (argmax != nullptr) {
      weighted ? max_rows<T, I, true, true>(p, xs, o, argmax, r0, r1)
               : max_rows<T, I, false, true>(p, xs, o, argmax, r0, r1);
    } else {
      weighted ? max_rows<T, I, true, false>(p, xs, o, argmax, r0, r1)
               : max_rows<T, I, false, false>(p, xs, o, argmax, r0, r1);
    }
  } else {
    weighted ? sum_rows<T, I, true>(p, xs, o, r0, r1) : sum_rows<T, I, false>(p, xs, o, r0, r1);
  }
}

template <typename T, typename I>
void max_grad_x_t(const CsrProblem& p, const CsrTranspose& t, const void* grad_out, const int64_t* argmax,
                  void* grad_x, int64_t c0, int64_t c1) {
  const T* go = static_cast<const T*>(grad_out);
  T* gx = static_cast<T*>(grad_x);
  p.weights ? max_grad_x_cols<T, I, true>(p, t, go, argmax, gx, c0, c1)
            : max_grad_x_cols<T, I, false>(p, t, go, argmax, gx, c0, c1);
}

}  // namespace


void forward_rows(const CsrProblem& p, const void* x, void* out, int64_t* argmax, int64_t r0, int64_t r1) {
  HEALTHAI_DISPATCH_TYPES(p, forward_rows_t, p, x, out, argmax, r0, r1);
}

void max_grad_x(const CsrProblem& p, const CsrTranspose& t, const void* grad_out, const int64_t* argmax,
                void* grad_x, int64_t c0, int64_t c1) {
  HEALTHAI_DISPATCH_TYPES(p, max_grad_x_t, p, t, grad_out, argmax, grad_x, c0, c1);
}

template <typename T, typename I>
void grad_w_t(const CsrProblem& p, const void* go, const void* x, const int64_t* argmax, void* gw, int64_t r0,
              int64_t r1) {
  grad_w_rows<T, I>(p, static_cast<const T*>(go), static_cast<const T*>(x), argmax, static_cast<T*>(gw), r0, r1);
}

void grad_w(const CsrProblem& p, const void* grad_out, const void* x, const int64_t* argmax, void* grad_w_out,
            int64_t r0, int64_t r1) {
  HEALTHAI_DISPATCH_TYPES(p, grad_w_t, p, grad_out, x, argmax, grad_w_out, r0, r1);
}


}  // namespace healthai::cpu::HEALTHAI_ISA
