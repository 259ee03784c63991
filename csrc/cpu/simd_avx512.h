// AVX-512 versions of rng/det_math.h's exp, expm1, log and of rng/philox.h's Philox4x32-10, eight
// double lanes at a time. Each function performs the scalar version's IEEE operations in the same
// order (no FMA: the including file is built with -ffp-contract=off), so every lane gets the bits
// the scalar code (and the CUDA kernels) compute. Include only from a file compiled under
// `#pragma GCC target("avx512f,avx512dq")` (metapop_avx512.cpp).
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "rng/det_math.h"

namespace healthai::cpu::avx512 {
namespace {

using V = __m512d;
using VI = __m512i;
using M = __mmask8;

inline V set1(double x) { return _mm512_set1_pd(x); }
inline V add(V a, V b) { return _mm512_add_pd(a, b); }
inline V sub(V a, V b) { return _mm512_sub_pd(a, b); }
inline V mul(V a, V b) { return _mm512_mul_pd(a, b); }
inline V div(V a, V b) { return _mm512_div_pd(a, b); }
inline M lt(V a, V b) { return _mm512_cmp_pd_mask(a, b, _CMP_LT_OQ); }
inline M le(V a, V b) { return _mm512_cmp_pd_mask(a, b, _CMP_LE_OQ); }
inline M gt(V a, V b) { return _mm512_cmp_pd_mask(a, b, _CMP_GT_OQ); }
inline M ge(V a, V b) { return _mm512_cmp_pd_mask(a, b, _CMP_GE_OQ); }
inline V blend(M m, V a, V b) { return _mm512_mask_blend_pd(m, a, b); }  // b where m, else a
inline V gather(M m, const double* base, VI idx) {
  return _mm512_mask_i64gather_pd(_mm512_setzero_pd(), m, idx, base, 8);
}
inline VI to_i64(V x) { return _mm512_cvttpd_epi64(x); }  // truncation, as static_cast<int64_t>
inline V to_f64(VI x) { return _mm512_cvtepi64_pd(x); }

// rng::floor_small: truncate through int64 (so -0.3 gives +0.0 - 1, as the scalar cast does).
inline V floor_small(V t) {
  const V k = to_f64(to_i64(t));
  return _mm512_mask_sub_pd(k, gt(k, t), k, set1(1.0));
}

// 2^e for integer lanes e in the normal range (rng::pow2i).
inline V pow2(VI e) { return _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_add_epi64(e, _mm512_set1_epi64(1023)), 52)); }

// rng::det_exp, lane by lane.
inline V det_exp(V x) {
  const V k = floor_small(add(mul(x, set1(92.332482616893656)), set1(0.5)));
  const V r = sub(sub(x, mul(k, set1(rng::kLn2Hi / 64.0))), mul(k, set1(rng::kLn2Lo / 64.0)));
  const V r2 = mul(r, r), r4 = mul(r2, r2);
  const V poly = add(add(add(set1(1.0), r), mul(r2, add(set1(1.0 / 2.0), mul(r, set1(1.0 / 6.0))))),
                     mul(r4, add(add(set1(1.0 / 24.0), mul(r, set1(1.0 / 120.0))), mul(r2, set1(1.0 / 720.0)))));
  const VI ki = to_i64(k);
  const VI j = _mm512_and_si512(ki, _mm512_set1_epi64(63));
  const VI q = _mm512_srai_epi64(_mm512_sub_epi64(ki, j), 6);  // exact: ki - j is a multiple of 64
  const V m = mul(_mm512_i64gather_pd(j, rng::exp2_table(), 8), poly);
  const M normal = _mm512_cmp_epi64_mask(q, _mm512_set1_epi64(-1021), _MM_CMPINT_NLT);
  V out = mul(m, pow2(q));
  if (normal != 0xFF) {
    const V low = mul(mul(m, pow2(_mm512_add_epi64(q, _mm512_set1_epi64(64)))), pow2(_mm512_set1_epi64(-64)));
    out = blend(normal, low, out);
  }
  out = blend(lt(x, set1(-745.2)), out, _mm512_setzero_pd());
  out = blend(gt(x, set1(709.7)), out, set1(HUGE_VAL));
  return blend(_mm512_cmp_pd_mask(x, x, _CMP_UNORD_Q), out, x);
}

// rng::det_expm1.
inline V det_expm1(V x) {
  const V x2 = mul(x, x), x4 = mul(x2, x2), x8 = mul(x4, x4);
  const V lo = add(add(add(set1(1.0), mul(x, set1(1.0 / 2.0))), mul(x2, add(set1(1.0 / 6.0), mul(x, set1(1.0 / 24.0))))),
                   mul(x4, add(add(set1(1.0 / 120.0), mul(x, set1(1.0 / 720.0))),
                               mul(x2, add(set1(1.0 / 5040.0), mul(x, set1(1.0 / 40320.0)))))));
  V out = mul(x, add(lo, mul(x8, add(set1(1.0 / 362880.0), mul(x, set1(1.0 / 3628800.0))))));
  const M big = ge(_mm512_abs_pd(x), set1(0.05));
  if (big) out = _mm512_mask_sub_pd(out, big, det_exp(x), set1(1.0));
  return out;
}

// rng::det_log for positive finite x (the callers' arguments; others are not handled).
inline V det_log(V x) {
  VI e = _mm512_setzero_si512();
  const M tiny = lt(x, set1(2.2250738585072014e-308));
  if (tiny) {
    x = _mm512_mask_mul_pd(x, tiny, x, set1(18014398509481984.0));
    e = _mm512_mask_mov_epi64(e, tiny, _mm512_set1_epi64(-54));
  }
  const VI b = _mm512_castpd_si512(x);
  e = _mm512_add_epi64(e, _mm512_sub_epi64(_mm512_srli_epi64(b, 52), _mm512_set1_epi64(1023)));
  V m = _mm512_castsi512_pd(_mm512_or_si512(_mm512_and_si512(b, _mm512_set1_epi64(0x000FFFFFFFFFFFFFll)),
                                            _mm512_set1_epi64(0x3FF0000000000000ll)));
  const M hi = ge(m, set1(1.4142135623730951));
  m = _mm512_mask_mul_pd(m, hi, m, set1(0.5));
  e = _mm512_mask_add_epi64(e, hi, e, _mm512_set1_epi64(1));
  const VI ji = to_i64(add(mul(m, set1(128.0)), set1(0.5)));
  const V jf = to_f64(ji);
  const V f = sub(m, mul(jf, set1(1.0 / 128.0)));
  const V s = div(f, add(mul(mul(set1(2.0), jf), set1(1.0 / 128.0)), f));
  const V s2 = mul(s, s), s4 = mul(s2, s2);
  const V atanh2 = mul(mul(set1(2.0), s), add(add(set1(1.0), mul(s2, set1(1.0 / 3.0))),
                                              mul(s4, add(set1(1.0 / 5.0), mul(s2, set1(1.0 / 7.0))))));
  const V de = to_f64(e);
  const V tab = _mm512_i64gather_pd(_mm512_sub_epi64(ji, _mm512_set1_epi64(90)), rng::log_table(), 8);
  return add(mul(de, set1(rng::kLn2Hi)), add(tab, add(atanh2, mul(de, set1(rng::kLn2Lo)))));
}

// Philox4x32-10 of eight streams (lane l: counter {c0[l], c1, c2, c3}), 32-bit words in 64-bit lanes;
// out[w] holds word w of each lane's block.
inline void philox(VI c0, uint32_t c1s, uint32_t c2s, uint32_t c3s, uint32_t k0, uint32_t k1, VI out[4]) {
  const VI lo32 = _mm512_set1_epi64(0xFFFFFFFFll), m0 = _mm512_set1_epi64(0xD2511F53ll), m1 = _mm512_set1_epi64(0xCD9E8D57ll);
  VI c1 = _mm512_set1_epi64(c1s), c2 = _mm512_set1_epi64(c2s), c3 = _mm512_set1_epi64(c3s);
  for (int r = 0; r < 10; ++r) {
    const VI p0 = _mm512_mul_epu32(m0, c0), p1 = _mm512_mul_epu32(m1, c2);
    const VI n0 = _mm512_xor_si512(_mm512_xor_si512(_mm512_srli_epi64(p1, 32), c1), _mm512_set1_epi64(k0));
    const VI n2 = _mm512_xor_si512(_mm512_xor_si512(_mm512_srli_epi64(p0, 32), c3), _mm512_set1_epi64(k1));
    c1 = _mm512_and_si512(p1, lo32);
    c3 = _mm512_and_si512(p0, lo32);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

}  // namespace
}  // namespace healthai::cpu::avx512
