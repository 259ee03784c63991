// Counter-based RNG shared by the CPU and CUDA metapopulation engines: Philox4x32-10 (Salmon et al.,
// SC'11) and the binomial sampler, on det_math.h's exp/log (the same bits on both devices). A stream
// is addressed by (seed, run, region, sub-step): the draws of one cell depend only on those, never
// on thread count, scheduling or device.
#pragma once

#include <cmath>
#include <cstdint>

#include "rng/det_math.h"  // HAI_HD, det_exp / det_expm1 / det_log

namespace healthai::rng {

HAI_HD void mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

// One Philox4x32-10 block: 4 x 32 random bits for counter c under key k.
HAI_HD void philox4x32_10(const uint32_t c_in[4], uint32_t k0, uint32_t k1, uint32_t out[4]) {
  uint32_t c0 = c_in[0], c1 = c_in[1], c2 = c_in[2], c3 = c_in[3];
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(0xD2511F53u, c0, &hi0, &lo0);
    mulhilo(0xCD9E8D57u, c2, &hi1, &lo1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

// The uniforms of one (run, region, substep) cell, consumed in a fixed order.
struct Stream {
  uint32_t key0, key1;
  uint32_t ctr[4];  // run, region, substep, block
  uint32_t buf[4];
  int used;

  HAI_HD Stream(uint64_t seed, uint32_t run, uint32_t region, uint32_t substep)
      : key0(static_cast<uint32_t>(seed)), key1(static_cast<uint32_t>(seed >> 32)), ctr{run, region, substep, 0},
        buf{0, 0, 0, 0}, used(4) {}
  // The same stream with its first block already computed (philox_first_blocks, vectorized on CPU).
  HAI_HD Stream(uint64_t seed, uint32_t run, uint32_t region, uint32_t substep, const uint32_t first[4])
      : key0(static_cast<uint32_t>(seed)), key1(static_cast<uint32_t>(seed >> 32)), ctr{run, region, substep, 1},
        buf{first[0], first[1], first[2], first[3]}, used(0) {}

  // Uniform in (0, 1): 32 bits, offset by half a step so that log(u) is finite.
  HAI_HD double uniform() {
    if (used == 4) {
      philox4x32_10(ctr, key0, key1, buf);
      ++ctr[3];
      used = 0;
    }
    return (static_cast<double>(buf[used++]) + 0.5) * 2.3283064365386963e-10;
  }
};

// log(k!): a table below 16, the Stirling series above (relative error < 1e-14).
HAI_HD double log_factorial(double k) {
  if (k < 16.0) {
    constexpr double kTable[16] = {0.0, 0.0, 0.693147180559945, 1.7917594692280554, 3.178053830347945,
                                   4.787491742782047, 6.579251212010102, 8.525161361065415, 10.604602902745249,
                                   12.801827480081467, 15.104412573075514, 17.502307845873887, 19.987214495661885,
                                   22.55216385312342, 25.191221182738683, 27.89927138384089};
    return kTable[static_cast<int>(k)];
  }
  const double x = k + 1.0, ix = 1.0 / x, ix2 = ix * ix;
  return (x - 0.5) * det_log(x) - x + 0.91893853320467274178 + (1.0 / 12.0 - (1.0 / 360.0 - ix2 * (1.0 / 1260.0)) * ix2) * ix;
}

// Optional look-up tables of a draw (CPU only; null on the device, where the same values are
// computed): they hold the very bits the formulas give, so results do not depend on them.
struct DrawTables {
  const double* pow_q = nullptr;     // q^n = det_exp(n log q) of a constant leap, n < pow_q_size
  int64_t pow_q_size = 0;
  double lpq = 0.0;                  // det_log(p / q) of that leap, when has_lpq
  bool has_lpq = false;
  const double* log_fact = nullptr;  // log_factorial(k), k < log_fact_size
  int64_t log_fact_size = 0;
  HAI_HD double lf(double k) const {
    return k < static_cast<double>(log_fact_size) ? log_fact[static_cast<int64_t>(k)] : log_factorial(k);
  }
};

// A transition over dt at `rate` per day: probability p = 1 - exp(-rate dt), q = 1 - p, log q.
struct Leap {
  double p, q, log_q;
  HAI_HD static Leap of(double rate_dt) {
    const double p = -det_expm1(-rate_dt);
    return {p, p < 0.5 ? 1.0 - p : det_exp(-rate_dt), -rate_dt};  // 1 - p is exact enough below 1/2
  }
  // A given probability p in [0, 1] (e.g. the hospitalised fraction of those leaving I).
  HAI_HD static Leap of_probability(double p) { return {p, 1.0 - p, p < 1.0 ? det_log(1.0 - p) : -HUGE_VAL}; }
};

// 1 / x: correctly rounded from a table below 64 (the inversion's steps), a division above.
HAI_HD double reciprocal(int64_t x) { return x < 64 ? reciprocal_table()[x] : 1.0 / static_cast<double>(x); }

// Inversion for n p < 10 from the uniform u, with r = P(X = 0) = q^n given.
HAI_HD int64_t binomial_inversion(int64_t n, const Leap& t, double u, double r) {
  const double ratio = t.p / t.q;
  int64_t x = 0;
  while (u > r && x < n) {
    u -= r;
    ++x;
    r *= ratio * static_cast<double>(n - x + 1) * reciprocal(x);
    if (r <= 0.0) break;  // underflow in the far tail
  }
  return x;
}

// Squeeze: q^n >= 1 - n p (Bernoulli's inequality), and det_exp is within 1e-15 of q^n, so a uniform
// u <= 1 - n p - 1e-12 is below the computed P(X = 0) and the draw is 0 without evaluating exp: the
// common case of a small mean, returning exactly what the full inversion would.
constexpr double kSqueezeSlack = 1e-12;

// Binomial(n, p) by inversion for n p < 10 and by BTRS (Hoermann 1993) above; the BTRS constants of
// the rare rejection branch are computed only when it is taken.
HAI_HD int64_t binomial(int64_t n, const Leap& t, Stream& s, const DrawTables& tab = DrawTables{}) {
  if (n <= 0 || !(t.p > 0.0)) return 0;
  if (!(t.q > 0.0)) return n;
  if (t.p > 0.5) {
    DrawTables flipped;  // the complementary leap: only the log-factorials still apply
    flipped.log_fact = tab.log_fact;
    flipped.log_fact_size = tab.log_fact_size;
    return n - binomial(n, Leap{t.q, t.p, det_log(t.p)}, s, flipped);
  }
  const double p = t.p, q = t.q, dn = static_cast<double>(n);
  const double np = dn * p;
  if (np < 10.0) {
    const double u = s.uniform();
    if (u <= 1.0 - dn * p - kSqueezeSlack) return 0;
    return binomial_inversion(n, t, u, n < tab.pow_q_size ? tab.pow_q[n] : det_exp(dn * t.log_q));
  }
  const double spq = sqrt(np * q);
  const double b = 1.15 + 2.53 * spq;
  const double a = -0.0873 + 0.0248 * b + 0.01 * p;
  const double c = np + 0.5;
  const double v_r = 0.92 - 4.2 / b;
  double alpha = 0.0, lpq = 0.0, m = 0.0, h = 0.0;
  bool slow_ready = false;
  for (;;) {
    const double u = s.uniform() - 0.5;
    double v = s.uniform();
    const double us = 0.5 - fabs(u);
    const double k = floor_small((2.0 * a / us + b) * u + c);  // us >= 2^-33: |argument| < 2^62
    if (k < 0.0 || k > dn) continue;
    if (us >= 0.07 && v <= v_r) return static_cast<int64_t>(k);
    if (!slow_ready) {
      alpha = (2.83 + 5.1 / b) * spq;
      lpq = tab.has_lpq ? tab.lpq : det_log(p / q);
      m = floor((dn + 1.0) * p);
      h = tab.lf(m) + tab.lf(dn - m);
      slow_ready = true;
    }
    v = det_log(v * alpha / (a / (us * us) + b));
    const double bound = h - tab.lf(k) - tab.lf(dn - k) + (k - m) * lpq;
    if (v <= bound) return static_cast<int64_t>(k);
  }
}

// Binomial(n, 1 - exp(-rate_dt)): binomial(n, Leap::of(rate_dt), s), with the exp of the leap
// skipped when the squeeze settles a small-mean draw at 0.
HAI_HD int64_t binomial_rate(int64_t n, double rate_dt, Stream& s, const DrawTables& tab = DrawTables{}) {
  if (n <= 0 || !(rate_dt > 0.0)) return 0;
  const double x = static_cast<double>(n) * rate_dt;  // >= n p
  if (rate_dt < 0.69 && x < 9.99) {  // p < 1/2 and n p < 10: binomial() takes the inversion
    const double u = s.uniform();
    if (u <= 1.0 - x - kSqueezeSlack) return 0;
    const Leap t = Leap::of(rate_dt);
    return binomial_inversion(n, t, u, det_exp(-x));  // -x = n log q exactly
  }
  return binomial(n, Leap::of(rate_dt), s, tab);
}

}  // namespace healthai::rng
