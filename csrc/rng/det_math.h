// exp, expm1 and log from IEEE-754 basic operations only (+, -, *, /, floor, integer bit operations on
// the representation), so the CPU and CUDA engines compute the same bits (both compile this without
// FMA contraction), which glibc and CUDA's libdevice do not promise. Accuracy: about 1 ulp, plenty for
// transition probabilities. Both reduce the argument with a small table (2^(j/64), log(j/128)) so the
// polynomials are short; the tables are the same constants on both devices.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

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

// 2^(j/64), j = 0..63, and log(j/128), j = 90..181 (correctly rounded, mpmath).
#define HAI_EXP2_64 \
    1.0, 1.0108892860517005, 1.0218971486541166, 1.0330248790212284, \
    1.0442737824274138, 1.0556451783605572, 1.0671404006768237, 1.0787607977571199, \
    1.0905077326652577, 1.102382583307841, 1.1143867425958924, 1.1265216186082418, \
    1.1387886347566916, 1.1511892299529827, 1.1637248587775775, 1.1763969916502812, \
    1.189207115002721, 1.202156731452703, 1.215247359980469, 1.22848053610687, \
    1.241857812073484, 1.255380757024691, 1.2690509571917332, 1.2828700160787783, \
    1.2968395546510096, 1.3109612115247644, 1.3252366431597413, 1.339667524053303, \
    1.3542555469368927, 1.3690024229745905, 1.383909881963832, 1.3989796725383112, \
    1.4142135623730951, 1.42961333839197, 1.4451808069770467, 1.460917794180647, \
    1.4768261459394993, 1.4929077282912648, 1.5091644275934228, 1.5255981507445384, \
    1.5422108254079407, 1.559004400237837, 1.5759808451078865, 1.593142151342267, \
    1.6104903319492543, 1.6280274218573478, 1.645755478153965, 1.6636765803267364, \
    1.681792830507429, 1.7001063537185235, 1.718619298122478, 1.7373338352737062, \
    1.7562521603732995, 1.7753764925265212, 1.7947090750031072, 1.8142521755003989, \
    1.8340080864093424, 1.8539791250833855, 1.8741676341103, 1.8945759815869656, \
    1.9152065613971474, 1.9360617934922943, 1.9571441241754002, 1.978456026387951

#define HAI_LOG_128 \
    -0.3522205935893521, -0.34117075740276714, -0.33024168687057687, -0.3194307707663612, \
    -0.3087354816496133, -0.29815337231907635, -0.2876820724517809, -0.27731928541623435, \
    -0.26706278524904525, -0.2569104137850272, -0.24686007793152578, -0.2369097470783577, \
    -0.22705745063534608, -0.2173012756899814, -0.2076393647782445, -0.1980699137620938, \
    -0.18859116980755003, -0.179201429457711, -0.16989903679539747, -0.16068238169047347, \
    -0.15154989812720093, -0.14250006260728304, -0.13353139262452263, -0.1246424452072766, \
    -0.1158318155251217, -0.1070981355563671, -0.09844007281325252, -0.08985632912186105, \
    -0.0813456394539524, -0.07290677080808779, -0.06453852113757118, -0.05623971832287608, \
    -0.048009219186360606, -0.039845908547199674, -0.0317486983145803, -0.023716526617316044, \
    -0.015748356968139168, -0.007843177461025893, 0.0, 0.007782140442054949, \
    0.015504186535965254, 0.02316705928153438, 0.030771658666753687, 0.0383188643021366, \
    0.0458095360312942, 0.053244514518812285, 0.06062462181643484, 0.06795066190850775, \
    0.07522342123758753, 0.08244366921107459, 0.08961215868968714, 0.09672962645855111, \
    0.10379679368164356, 0.11081436634029011, 0.11778303565638346, 0.12470347850095724, \
    0.13157635778871926, 0.13840232285911913, 0.1451820098444979, 0.15191604202584197, \
    0.15860503017663857, 0.16524957289530717, 0.17185025692665923, 0.1784076574728183, \
    0.184922338494012, 0.19139485299962947, 0.19782574332991987, 0.2042155414286909, \
    0.21056476910734964, 0.21687393830061436, 0.22314355131420976, 0.22937410106484582, \
    0.2355660713127669, 0.24171993688714516, 0.24783616390458127, 0.25391520998096345, \
    0.25995752443692605, 0.26596354849713794, 0.27193371548364176, 0.2778684510034563, \
    0.2837681731306446, 0.28963329258304266, 0.2954642128938359, 0.3012613305781618, \
    0.3070250352949119, 0.3127557100038969, 0.3184537311185346, 0.324119468654212, \
    0.329753286372468, 0.3353555419211378, 0.3409265869705932, 0.34646676734620857

// 1 / x, x = 1..63 (correctly rounded IEEE divisions; entry 0 unused).
#define HAI_RECIP_64 \
    0.0, 1.0, 0.5, 0.3333333333333333, 0.25, 0.2, \
    0.16666666666666666, 0.14285714285714285, 0.125, 0.1111111111111111, 0.1, 0.09090909090909091, \
    0.08333333333333333, 0.07692307692307693, 0.07142857142857142, 0.06666666666666667, 0.0625, 0.058823529411764705, \
    0.05555555555555555, 0.05263157894736842, 0.05, 0.047619047619047616, 0.045454545454545456, 0.043478260869565216, \
    0.041666666666666664, 0.04, 0.038461538461538464, 0.037037037037037035, 0.03571428571428571, 0.034482758620689655, \
    0.03333333333333333, 0.03225806451612903, 0.03125, 0.030303030303030304, 0.029411764705882353, 0.02857142857142857, \
    0.027777777777777776, 0.02702702702702703, 0.02631578947368421, 0.02564102564102564, 0.025, 0.024390243902439025, \
    0.023809523809523808, 0.023255813953488372, 0.022727272727272728, 0.022222222222222223, 0.021739130434782608, 0.02127659574468085, \
    0.020833333333333332, 0.02040816326530612, 0.02, 0.0196078431372549, 0.019230769230769232, 0.018867924528301886, \
    0.018518518518518517, 0.01818181818181818, 0.017857142857142856, 0.017543859649122806, 0.017241379310344827, 0.01694915254237288, \
    0.016666666666666666, 0.01639344262295082, 0.016129032258064516, 0.015873015873015872

#if defined(__CUDACC__)
__constant__ double kRecipDevice[64] = {HAI_RECIP_64};
__constant__ double kExp2Device[64] = {HAI_EXP2_64};
__constant__ double kLogDevice[92] = {HAI_LOG_128};
#endif
inline constexpr double kRecipHost[64] = {HAI_RECIP_64};
inline constexpr double kExp2Host[64] = {HAI_EXP2_64};
inline constexpr double kLogHost[92] = {HAI_LOG_128};
#undef HAI_RECIP_64
#undef HAI_EXP2_64
#undef HAI_LOG_128

HAI_HD const double* exp2_table() {
#if defined(__CUDA_ARCH__)
  return kExp2Device;
#else
  return kExp2Host;
#endif
}

HAI_HD const double* reciprocal_table() {
#if defined(__CUDA_ARCH__)
  return kRecipDevice;
#else
  return kRecipHost;
#endif
}

HAI_HD const double* log_table() {
#if defined(__CUDA_ARCH__)
  return kLogDevice;
#else
  return kLogHost;
#endif
}

HAI_HD uint64_t bits_of(double x) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(x));
#else
  uint64_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
#endif
}

HAI_HD double double_of(uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(b));
#else
  double x;
  std::memcpy(&x, &b, sizeof x);
  return x;
#endif
}

// floor(t) for |t| < 2^62 by truncation (baseline x86-64 has no floor instruction): exact.
HAI_HD double floor_small(double t) {
  const double k = static_cast<double>(static_cast<int64_t>(t));
  return k > t ? k - 1.0 : k;
}

// 2^q for an integer q of the normal range [-1022, 1023], built from its bits.
HAI_HD double pow2i(int q) { return double_of(static_cast<uint64_t>(q + 1023) << 52); }

HAI_HD double det_exp(double x) {
  if (x != x) return x;
  if (x < -745.2) return 0.0;
  if (x > 709.7) return HUGE_VAL;
  // x = (64 q + j) ln2 / 64 + r with |r| <= ln2/128: exp(x) = 2^q 2^(j/64) exp(r), 7 terms < 1e-19
  const double k = floor_small(x * 92.332482616893656 + 0.5);  // 64 / ln 2
  const double r = (x - k * (kLn2Hi / 64.0)) - k * (kLn2Lo / 64.0);
  const double r2 = r * r, r4 = r2 * r2;  // Estrin's scheme: a shorter dependent chain than Horner's
  const double poly = ((1.0 + r) + r2 * (1.0 / 2.0 + r * (1.0 / 6.0))) +
                      r4 * ((1.0 / 24.0 + r * (1.0 / 120.0)) + r2 * (1.0 / 720.0));
  const int ki = static_cast<int>(k);
  const int j = ki & 63, q = (ki - j) / 64;  // two's complement: j = ki mod 64 also for ki < 0
  const double m = exp2_table()[j] * poly;
  if (q >= -1021) return m * pow2i(q);
  return (m * pow2i(q + 64)) * pow2i(-64);  // results near the subnormal range: two exact-range steps
}

// exp(x) - 1 without cancellation near 0: x * sum_{k=0..9} x^k / (k+1)! for |x| < 0.05.
HAI_HD double det_expm1(double x) {
  if (fabs(x) >= 0.05) return det_exp(x) - 1.0;
  const double x2 = x * x, x4 = x2 * x2, x8 = x4 * x4;  // Estrin's scheme, as in det_exp
  const double lo = ((1.0 + x * (1.0 / 2.0)) + x2 * (1.0 / 6.0 + x * (1.0 / 24.0))) +
                    x4 * ((1.0 / 120.0 + x * (1.0 / 720.0)) + x2 * (1.0 / 5040.0 + x * (1.0 / 40320.0)));
  return x * (lo + x8 * (1.0 / 362880.0 + x * (1.0 / 3628800.0)));
}

HAI_HD double det_log(double x) {
  if (!(x > 0.0)) return x == 0.0 ? -HUGE_VAL : (x - x) / (x - x);  // NaN for x < 0
  if (x == HUGE_VAL) return x;
  int e = 0;
  if (x < 2.2250738585072014e-308) {  // subnormal: scale into the normal range first
    x *= 18014398509481984.0;         // 2^54
    e = -54;
  }
  const uint64_t b = bits_of(x);
  e += static_cast<int>(b >> 52) - 1023;
  double m = double_of((b & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);  // x = m 2^e, m in [1, 2)
  if (m >= 1.4142135623730951) {
    m *= 0.5;
    ++e;
  }
  // m in [0.7071, 1.4142): m = F (1 + f / F) with F = j / 128 the nearest, f = m - F exact (Sterbenz);
  // log(m / F) = 2 atanh(s), s = f / (2 F + f), |s| < 0.0028: 4 terms < 1e-21.
  const double jf = static_cast<double>(static_cast<int>(m * 128.0 + 0.5));  // floor of a positive
  const double f = m - jf * (1.0 / 128.0);
  const double s = f / (2.0 * jf * (1.0 / 128.0) + f), s2 = s * s;
  const double s4 = s2 * s2;
  const double atanh2 = 2.0 * s * ((1.0 + s2 * (1.0 / 3.0)) + s4 * (1.0 / 5.0 + s2 * (1.0 / 7.0)));
  const double de = static_cast<double>(e);
  return de * kLn2Hi + (log_table()[static_cast<int>(jf) - 90] + (atanh2 + de * kLn2Lo));
}

}  // namespace healthai::rng
