// Sixteen lanes as two AVX-512 vectors: every operation is issued on both halves, so the sampler's
// long dependency chains (gather -> divide -> compare -> branch) of two independent groups of eight
// cells overlap. Lane l lives in half l / 8. Same operations per lane as simd_avx512.h (same bits).
// Include only from a file compiled under `#pragma GCC target("avx512f,avx512dq")`.
#pragma once

#include "cpu/simd_avx512.h"

namespace healthai::cpu::avx512::x16 {
namespace {

namespace s8 = healthai::cpu::avx512;

struct V {
  __m512d a, b;
};
struct VI {
  __m512i a, b;
};
using M = __mmask16;

constexpr int kLanes = 16;

inline __mmask8 lo(M m) { return static_cast<__mmask8>(m); }
inline __mmask8 hi(M m) { return static_cast<__mmask8>(m >> 8); }
inline M join(__mmask8 a, __mmask8 b) { return static_cast<M>(a | (static_cast<unsigned>(b) << 8)); }

inline V set1(double x) { return {_mm512_set1_pd(x), _mm512_set1_pd(x)}; }
inline V zero() { return {_mm512_setzero_pd(), _mm512_setzero_pd()}; }
#define HAI_X16_BINARY(name, op) \
  inline V name(V x, V y) { return {op(x.a, y.a), op(x.b, y.b)}; }
HAI_X16_BINARY(add, _mm512_add_pd)
HAI_X16_BINARY(sub, _mm512_sub_pd)
HAI_X16_BINARY(mul, _mm512_mul_pd)
HAI_X16_BINARY(div, _mm512_div_pd)
#undef HAI_X16_BINARY
#define HAI_X16_UNARY(name, op) \
  inline V name(V x) { return {op(x.a), op(x.b)}; }
HAI_X16_UNARY(abs, _mm512_abs_pd)
HAI_X16_UNARY(sqrt, _mm512_sqrt_pd)
HAI_X16_UNARY(floor_small, s8::floor_small)
HAI_X16_UNARY(det_exp, s8::det_exp)
HAI_X16_UNARY(det_expm1, s8::det_expm1)
HAI_X16_UNARY(det_log, s8::det_log)
#undef HAI_X16_UNARY
inline V floor(V x) {
  constexpr int kDown = _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC;
  return {_mm512_roundscale_pd(x.a, kDown), _mm512_roundscale_pd(x.b, kDown)};
}
inline V neg(V x) { return {_mm512_xor_pd(x.a, _mm512_set1_pd(-0.0)), _mm512_xor_pd(x.b, _mm512_set1_pd(-0.0))}; }
#define HAI_X16_CMP(name, pred) \
  inline M name(V x, V y) { return join(_mm512_cmp_pd_mask(x.a, y.a, pred), _mm512_cmp_pd_mask(x.b, y.b, pred)); }
HAI_X16_CMP(lt, _CMP_LT_OQ)
HAI_X16_CMP(le, _CMP_LE_OQ)
HAI_X16_CMP(gt, _CMP_GT_OQ)
HAI_X16_CMP(ge, _CMP_GE_OQ)
#undef HAI_X16_CMP
// y where m, else x
inline V blend(M m, V x, V y) { return {_mm512_mask_blend_pd(lo(m), x.a, y.a), _mm512_mask_blend_pd(hi(m), x.b, y.b)}; }
// op(x, y) where m, else src
inline V mask_add(V src, M m, V x, V y) { return {_mm512_mask_add_pd(src.a, lo(m), x.a, y.a), _mm512_mask_add_pd(src.b, hi(m), x.b, y.b)}; }
inline V mask_sub(V src, M m, V x, V y) { return {_mm512_mask_sub_pd(src.a, lo(m), x.a, y.a), _mm512_mask_sub_pd(src.b, hi(m), x.b, y.b)}; }
inline V mask_mul(V src, M m, V x, V y) { return {_mm512_mask_mul_pd(src.a, lo(m), x.a, y.a), _mm512_mask_mul_pd(src.b, hi(m), x.b, y.b)}; }

inline VI to_i64(V x) { return {s8::to_i64(x.a), s8::to_i64(x.b)}; }
inline V to_f64(VI x) { return {s8::to_f64(x.a), s8::to_f64(x.b)}; }
inline VI iset1(int64_t x) { return {_mm512_set1_epi64(x), _mm512_set1_epi64(x)}; }
inline VI iadd(VI x, VI y) { return {_mm512_add_epi64(x.a, y.a), _mm512_add_epi64(x.b, y.b)}; }
inline VI imask_add(VI src, M m, VI x, VI y) {
  return {_mm512_mask_add_epi64(src.a, lo(m), x.a, y.a), _mm512_mask_add_epi64(src.b, hi(m), x.b, y.b)};
}
inline int64_t imax(VI x) { return _mm512_reduce_max_epi64(_mm512_max_epi64(x.a, x.b)); }
// Lane numbers 0..15.
inline VI iota() {
  return {_mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0), _mm512_set_epi64(15, 14, 13, 12, 11, 10, 9, 8)};
}

// base[idx] on the lanes of m, 0 elsewhere (no memory touched there).
inline V gather(M m, const double* base, VI idx) {
  return {s8::gather(lo(m), base, idx.a), s8::gather(hi(m), base, idx.b)};
}
inline V loadu(M m, const double* a) { return {_mm512_maskz_loadu_pd(lo(m), a), _mm512_maskz_loadu_pd(hi(m), a + 8)}; }
inline void storeu(M m, double* a, V v) {
  _mm512_mask_storeu_pd(a, lo(m), v.a);
  _mm512_mask_storeu_pd(a + 8, hi(m), v.b);
}
inline V load_i32(M m, const int32_t* a) {
  const __m512i w = _mm512_maskz_loadu_epi32(m, a);
  return {_mm512_cvtepi32_pd(_mm512_castsi512_si256(w)), _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(w, 1))};
}
inline void store_i32(M m, int32_t* a, V v) {
  const __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvttpd_epi32(v.a)), _mm512_cvttpd_epi32(v.b), 1);
  _mm512_mask_storeu_epi32(a, m, w);
}
inline M tail_mask(int64_t left) { return left >= kLanes ? M{0xFFFF} : static_cast<M>((1u << left) - 1u); }

}  // namespace
}  // namespace healthai::cpu::avx512::x16
