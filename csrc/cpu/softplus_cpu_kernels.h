// The float32 softplus loop, compiled once per instruction set (HEALTHAI_ISA names the namespace; see
// CMakeLists.txt for the flags). Every step is a select or arithmetic on the element and its bits, so
// the loop vectorises; the constants are Cephes' expf/logf (S. Moshier) with a Cody-Waite split of ln 2.
#include <cmath>
#include <cstdint>
#include <cstring>

namespace healthai::cpu::HEALTHAI_ISA {

namespace {

inline float bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

// e^-a for a in [0, 87] (the caller clamps): 2^n * e^r, |r| <= ln2 / 2.
inline float exp_neg(float a) {
  const float n = (-a * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest (|n| < 2^22)
  float r = -a - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * r * r + r + 1.0f;
  const uint32_t scale = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  return er * bits_to_float(scale);
}

// log1p(t) for t in [0, 1]: log(2^e * m), m in [sqrt(1/2), sqrt(2)), by Cephes' logf polynomial in f = m - 1.
// f is formed from t without rounding 1 + t first: f = t (e = 0) or (t - 1) / 2 (e = 1), so small t keep
// every bit (log1p(t) = t - t^2/2 + ...).
inline float log1p_0_to_1(float t) {
  const float e = t > 0.41421356237f ? 1.0f : 0.0f;
  const float f = e > 0.0f ? (t - 1.0f) * 0.5f : t;
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  float y = f * z * p;
  y += e * -2.12194440e-4f;
  y += -0.5f * z;
  return f + y + e * 0.693359375f;
}

inline float softplus_one(float x) {
  const float a = std::fabs(x);                      // NaN stays NaN through the compares below
  const float t = exp_neg(a < 87.0f ? a : 87.0f);    // e^-|x| in [1.6e-38, 1]
  const float tail = a < 87.0f ? log1p_0_to_1(t) : 0.0f;  // below e^-87 the exact value is < 1.7e-38
  const float relu = x > 0.0f ? x : 0.0f;
  const float y = relu + tail;
  return x == x ? y : x;                             // NaN in, NaN out
}

}  // namespace

void softplus_f32(const float* x, float* y, int64_t n) {
#pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i) y[i] = softplus_one(x[i]);
}

}  // namespace healthai::cpu::HEALTHAI_ISA
