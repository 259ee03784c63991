// exp, expm1 and log from IEEE-754 basic operations only (+, -, *, /, floor, ldexp, frexp), so the CPU
// and CUDA engines compute the same bits (both compile this without FMA contraction), which glibc and
// CUDA's libdevice do not promise. Accuracy: about 1 ulp, plenty for transition probabilities.
#pragma once

#include <cmath>

#ifndef HAI_HD
#if defined(__CUDACC__)
#define HAI_HD __host__ __device__ __forceinline__
#else
#define HAI_HD inline
#endif
#endif

namespace healthai::rng {

constexpr double kLn2Hi = 6.93147180369123816490e-01;  // Cody-Waite split of ln 2 (fdlibm)
constexpr double kLn2Lo = 1.90821492927058770002e-10;

// sum_k c[k] x^k by Estrin's scheme (pairs, then pairs of pairs with x^2, x^4, ...): half the
// dependent multiply-add chain of Horner's, in a fixed order of operations.
template <int N>
HAI_HD double estrin(const double (&c)[N], double x) {
  double a[N];
  for (int k = 0; k < N; ++k) a[k] = c[k];
  int n = N;
  while (n > 1) {
    const int half = (n + 1) / 2;
    for (int k = 0; k < half; ++k) a[k] = 2 * k + 1 < n ? a[2 * k] + a[2 * k + 1] * x : a[2 * k];
    n = half;
    x *= x;
  }
  return a[0];
}

// 1/k! for k = 0..17
#define HAI_INV_FACT                                                                                    \
  1.0, 1.0, 1.0 / 2.0, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0, 1.0 / 5040.0, 1.0 / 40320.0,   \
      1.0 / 362880.0, 1.0 / 3628800.0, 1.0 / 39916800.0, 1.0 / 479001600.0, 1.0 / 6227020800.0,        \
      1.0 / 87178291200.0, 1.0 / 1307674368000.0, 1.0 / 20922789888000.0, 1.0 / 355687428096000.0

HAI_HD double det_exp(double x) {
  if (x != x) return x;
  if (x < -745.2) return 0.0;
  if (x > 709.7) return HUGE_VAL;
  // x = (8 q + j) ln2 / 8 + r with |r| <= ln2/16: exp(x) = 2^q 2^(j/8) exp(r), 10 terms < 1e-18
  const double k = floor(x * 11.541560327111707 + 0.5);  // 8 / ln 2
  const double r = (x - k * (kLn2Hi / 8.0)) - k * (kLn2Lo / 8.0);
  const double c[18] = {HAI_INV_FACT};
  double t[10];
  for (int j = 0; j < 10; ++j) t[j] = c[j];
  const double two_j8[8] = {1.0, 1.0905077326652577, 1.189207115002721, 1.2968395546510096, 1.4142135623730951, 1.5422108254079407, 1.681792830507429, 1.8340080864093424};
  const int ki = static_cast<int>(k);
  const int j = ((ki % 8) + 8) % 8;
  return ldexp(two_j8[j] * estrin(t, r), (ki - j) / 8);
}

// exp(x) - 1 without cancellation near 0: x * sum_{k=0..9} x^k / (k+1)! for |x| < 0.05.
HAI_HD double det_expm1(double x) {
  if (fabs(x) >= 0.05) return det_exp(x) - 1.0;
  const double c[18] = {HAI_INV_FACT};
  double t[10];
  for (int j = 0; j < 10; ++j) t[j] = c[j + 1];
  return estrin(t, x) * x;
}

HAI_HD double det_log(double x) {
  if (!(x > 0.0)) return x == 0.0 ? -HUGE_VAL : (x - x) / 0.0;
  if (x == HUGE_VAL) return x;
  int e;
  double m = frexp(x, &e);  // x = m 2^e, m in [0.5, 1)
  if (m < 0.70710678118654752440) {
    m *= 2.0;
    --e;
  }
  const double s = (m - 1.0) / (m + 1.0), s2 = s * s;  // |s| <= 0.1716: log m = 2 atanh(s)
  const double c[12] = {1.0,        1.0 / 3.0,  1.0 / 5.0,  1.0 / 7.0,  1.0 / 9.0,  1.0 / 11.0,
                        1.0 / 13.0, 1.0 / 15.0, 1.0 / 17.0, 1.0 / 19.0, 1.0 / 21.0, 1.0 / 23.0};
  return static_cast<double>(e) * kLn2Hi + (2.0 * s * estrin(c, s2) + static_cast<double>(e) * kLn2Lo);
}

#undef HAI_INV_FACT

}  // namespace healthai::rng
