// AVX-512 transitions of the metapopulation engine: the runs of a region are the vector lanes (sixteen
// cells per step as two vectors, simd_x16.h). Each lane reads its own Philox stream (rng::Stream's uniforms, in its order) and
// takes the scalar sampler's decisions with the scalar sampler's IEEE operations, so every cell gets
// the bits of metapop::leap, which the CUDA kernels compute too. Rare paths (a flipped leap that would
// flip again, a BTRS draw needing more than kMaxTries rounds) and run tails under kMinLanes hand the
// whole cell to metapop::leap.
// Built with -ffp-contract=off; only the code after the target pragma uses AVX-512, the shared inline
// headers above it are compiled for the baseline (their out-of-line copies may be picked by the linker
// for any caller).
#include "cpu/metapop_leaps.h"

#include <cstdint>
#include <utility>
#include <vector>

#include "metapop_cell.h"

// GCC 12 warns about the intrinsics headers' own undefined-vector idiom
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

bool healthai::cpu::avx512_usable() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  }();
  return ok;
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq")
#include "cpu/simd_x16.h"

namespace healthai::cpu::avx512::x16 {
namespace {

// The samplers below are inlined into their callers: every zmm register is caller-saved in the x86-64
// SysV ABI, so an out-of-line call spills and reloads the live vectors (measured: ~10 % of the job).
#define HAI_INLINE __attribute__((always_inline)) inline

constexpr int kMinLanes = 3;  // a vector for fewer runs costs more than scalar cells (measured)
constexpr int kMaxTries = 4;  // BTRS rounds per draw in vectors
constexpr int kMaxDraws = 6;  // S->E, vaccination, E->I, I->R, admission, discharge
// Philox blocks a cell can use: per draw one uniform for binomial_rate's squeeze, one for binomial's,
// 2 kMaxTries for BTRS (a lane past that goes to the scalar code)
constexpr int kMaxBlocks = kMaxDraws * (2 * kMaxTries + 2) / 4;

// The streams of sixteen cells (run k0 + l, region, sub-step): blocks computed when first needed.
struct Streams {
  alignas(64) double u[kMaxBlocks * 4 * kLanes];  // uniform w of lane l at [w * kLanes + l]
  int blocks = 0;
  VI pos;         // next uniform of each lane
  int64_t hi = 0;  // >= every lane's position
  VI run;
  uint32_t region = 0, gsub = 0, key0 = 0, key1 = 0;
  M fallback = 0;  // lanes handed to metapop::leap

  void reset(int64_t k0) {
    blocks = 0;
    pos = iset1(0);
    hi = 0;
    run = iadd(iset1(k0), iota());
    fallback = 0;
  }

  // Compute blocks until uniform `last` (a position) is there.
  void ensure(int64_t last) {
    while (last >= 4 * blocks) {  // last < 4 kMaxBlocks: see kMaxBlocks
      __m512i w[2][4];
      s8::philox(run.a, region, gsub, static_cast<uint32_t>(blocks), key0, key1, w[0]);
      s8::philox(run.b, region, gsub, static_cast<uint32_t>(blocks), key0, key1, w[1]);
      for (int j = 0; j < 4; ++j) {
        const V d = mul(add(to_f64(VI{w[0][j], w[1][j]}), set1(0.5)), set1(2.3283064365386963e-10));
        storeu(M{0xFFFF}, u + (4 * blocks + j) * kLanes, d);
      }
      ++blocks;
    }
  }
  // Uniform p + ahead of every lane (rng::Stream::uniform's value), its block computed: the gather
  // is unmasked (every lane's position is in the buffer), so it waits on no lane decision. When every
  // lane is at the same position (the lanes took the same path so far: the common case) the sixteen
  // values are one contiguous row: two loads instead of two gathers, which some cores (AMD Zen 4)
  // run several times slower. The same bits either way.
  V at(VI p, int ahead) const {
    const int64_t first = _mm_cvtsi128_si64(_mm512_castsi512_si128(p.a));
    const __m512i same = _mm512_set1_epi64(first);
    if ((_mm512_cmpeq_epi64_mask(p.a, same) & _mm512_cmpeq_epi64_mask(p.b, same)) == 0xFF) {
      const double* row = u + (first + ahead) * kLanes;
      return {_mm512_load_pd(row), _mm512_load_pd(row + 8)};
    }
    const VI idx = {_mm512_add_epi64(_mm512_slli_epi64(p.a, 4), iota().a), _mm512_add_epi64(_mm512_slli_epi64(p.b, 4), iota().b)};
    return {_mm512_i64gather_pd(idx.a, u + ahead * kLanes, 8), _mm512_i64gather_pd(idx.b, u + ahead * kLanes, 8)};
  }
  // The next uniform of each lane of m.
  V take(M m) {
    if (hi >= 4 * blocks) {
      hi = imax(pos);
      ensure(hi);
    }
    ++hi;
    const V x = at(pos, 0);
    pos = imask_add(pos, m, pos, iset1(1));
    return x;
  }
};

// rng::binomial_inversion on the lanes of m, r = P(X = 0) given: lanes leave the loop for good, so the
// lanes still in it at round j all have x = j and share reciprocal(j). u and r are updated in every
// lane (a lane's values after it left are never read), so only x waits on the lanes' decisions.
HAI_INLINE V inversion(M m, V n, V ratio, V u, V r) {
  V x = zero();
  M go = m & gt(u, r) & lt(x, n);
  for (int64_t j = 1; go; ++j) {
    u = sub(u, r);
    x = mask_add(x, go, x, set1(1.0));
    r = mul(r, mul(mul(ratio, sub(n, set1(static_cast<double>(j - 1)))), set1(rng::reciprocal(j))));
    go &= gt(r, zero()) & gt(u, r) & gt(n, set1(static_cast<double>(j)));
  }
  return x;
}

// DrawTables::lf on the lanes of m (0 <= k): the table below its size, Stirling's series above.
HAI_INLINE V log_fact(M m, V k, const rng::DrawTables& tab) {
  const M small = m & lt(k, set1(static_cast<double>(tab.log_fact_size)));
  V out = gather(small, tab.log_fact, to_i64(k));
  const M big = m & ~small;
  if (big) {  // rng::log_factorial above 16
    const V x = add(k, set1(1.0)), ix = div(set1(1.0), x), ix2 = mul(ix, ix);
    const V series = mul(sub(set1(1.0 / 12.0), mul(sub(set1(1.0 / 360.0), mul(ix2, set1(1.0 / 1260.0))), ix2)), ix);
    const V s = add(add(sub(mul(sub(x, set1(0.5)), det_log(x)), x), set1(0.91893853320467274178)), series);
    out = blend(big, out, s);
  }
  return out;
}

// Whether det_log(w) <= bound, where that is sure without det_log: w = 2^e m, m in [sqrt(1/2), sqrt 2)
// (det_log's split), y = m - 1 (exact), log w = e ln 2 + y - y^2/2 + y^3/3 + err with |err| <=
// y^4 / (4 (1 - |y|)) < 0.43 y^4; det_log and this sum are within 1e-12 (1 + |e|) of log w. Returns
// the lanes of m surely accepted (bits 0-15) and surely rejected (bits 16-31); the others need det_log.
inline uint32_t log_squeeze(M m, V w, V bound) {
  uint32_t sure_yes = 0, sure_no = 0;
  const __m512d halves[2] = {w.a, w.b};
  const __m512d bounds[2] = {bound.a, bound.b};
  for (int j = 0; j < 2; ++j) {
    const __m512i bits = _mm512_castpd_si512(halves[j]);
    __m512i e = _mm512_sub_epi64(_mm512_srli_epi64(bits, 52), _mm512_set1_epi64(1023));
    __m512d mant = _mm512_castsi512_pd(_mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi64(0x000FFFFFFFFFFFFFll)),
                                                       _mm512_set1_epi64(0x3FF0000000000000ll)));
    const __mmask8 big = _mm512_cmp_pd_mask(mant, _mm512_set1_pd(1.4142135623730951), _CMP_GE_OQ);
    mant = _mm512_mask_mul_pd(mant, big, mant, _mm512_set1_pd(0.5));
    e = _mm512_mask_add_epi64(e, big, e, _mm512_set1_epi64(1));
    const __m512d y = _mm512_sub_pd(mant, _mm512_set1_pd(1.0)), de = _mm512_cvtepi64_pd(e);
    const __m512d y2 = _mm512_mul_pd(y, y);
    const __m512d series = _mm512_add_pd(y, _mm512_mul_pd(y2, _mm512_sub_pd(_mm512_mul_pd(y, _mm512_set1_pd(1.0 / 3.0)), _mm512_set1_pd(0.5))));
    const __m512d approx = _mm512_add_pd(_mm512_mul_pd(de, _mm512_set1_pd(0.6931471805599453)), series);
    const __m512d slack = _mm512_add_pd(_mm512_mul_pd(_mm512_mul_pd(y2, y2), _mm512_set1_pd(0.43)),
                                        _mm512_mul_pd(_mm512_add_pd(_mm512_abs_pd(de), _mm512_set1_pd(1.0)), _mm512_set1_pd(1e-12)));
    // only normal finite w have this split (BTRS: always, w > 1e-35)
    const __mmask8 mj = _mm512_mask_cmp_pd_mask(
        _mm512_cmp_pd_mask(halves[j], _mm512_set1_pd(1.7976931348623157e308), _CMP_LE_OQ) & static_cast<__mmask8>(m >> (8 * j)),
        halves[j], _mm512_set1_pd(2.2250738585072014e-308), _CMP_GE_OQ);
    const __mmask8 yes = _mm512_mask_cmp_pd_mask(mj, _mm512_add_pd(approx, slack), bounds[j], _CMP_LE_OQ);
    const __mmask8 no = _mm512_mask_cmp_pd_mask(mj, _mm512_sub_pd(approx, slack), bounds[j], _CMP_GT_OQ);
    sure_yes |= static_cast<uint32_t>(yes) << (8 * j);
    sure_no |= static_cast<uint32_t>(no) << (8 * j);
  }
  return sure_yes | (sure_no << 16);
}

// The BTRS part of rng::binomial on the lanes of m (n p >= 10, p <= 1/2); `tabbed` lanes may use tab.lpq.
HAI_INLINE V btrs(Streams& s, M m, V n, V p, V q, V np, const rng::DrawTables& tab, M tabbed) {
  const V spq = sqrt(mul(np, q));
  const V b = add(set1(1.15), mul(set1(2.53), spq));
  const V a = add(add(set1(-0.0873), mul(set1(0.0248), b)), mul(set1(0.01), p));
  const V c = add(np, set1(0.5));
  const V v_r = sub(set1(0.92), div(set1(4.2), b));
  V alpha = zero(), lpq = zero(), mm = zero(), h = zero(), out = zero();
  M ready = 0, pend = m;
  // Round r of a lane reads its uniforms pos0 + 2r (u) and pos0 + 2r + 1 (v), gathered whatever the
  // lanes decided in earlier rounds: the rounds do not wait on each other's loads.
  const VI pos0 = s.pos;
  const int64_t top = imax(pos0);
  VI used = iset1(0);
  int tries = 0;
  for (; pend; ++tries) {
    if (tries == kMaxTries) {
      s.fallback |= pend;
      break;
    }
    s.ensure(top + 2 * tries + 1);
    used = imask_add(used, pend, used, iset1(2));
    const V u = sub(s.at(pos0, 2 * tries), set1(0.5));
    const V v = s.at(pos0, 2 * tries + 1);
    const V us = sub(set1(0.5), abs(u));
    const V k = floor_small(add(mul(add(div(mul(set1(2.0), a), us), b), u), c));
    const M in = pend & ~lt(k, zero()) & ~gt(k, n);
    const M fast = in & ge(us, set1(0.07)) & le(v, v_r);
    out = blend(fast, out, k);
    pend &= ~fast;
    const M slow = in & ~fast;
    if (!slow) continue;
    const M fresh = slow & ~ready;
    if (fresh) {
      alpha = blend(fresh, alpha, mul(add(set1(2.83), div(set1(5.1), b)), spq));
      const M looked = fresh & (tab.has_lpq ? tabbed : M{0});
      lpq = blend(looked, lpq, set1(tab.lpq));
      if (fresh & ~looked) lpq = blend(fresh & ~looked, lpq, det_log(div(p, q)));
      const V mf = floor(mul(add(n, set1(1.0)), p));
      mm = blend(fresh, mm, mf);
      h = blend(fresh, h, add(log_fact(fresh, mf, tab), log_fact(fresh, sub(n, mf), tab)));
      ready |= fresh;
    }
    const V w = div(mul(v, alpha), add(div(a, mul(us, us)), b));
    const V bound = add(sub(sub(h, log_fact(slow, k, tab)), log_fact(slow, sub(n, k), tab)), mul(sub(k, mm), lpq));
    const uint32_t sure = log_squeeze(slow, w, bound);  // most lanes: decided without the logarithm
    const M unsure = slow & ~static_cast<M>(sure) & ~static_cast<M>(sure >> 16);
    M accept = static_cast<M>(sure);
    if (unsure) accept |= unsure & le(det_log(w), bound);
    out = blend(accept, out, k);
    pend &= ~accept;
  }
  s.pos = iadd(pos0, used);
  s.hi = top + 2 * tries;
  return out;
}

// rng::binomial on the lanes of m with per-lane p, q, log q (the leap); tab as the scalar call's.
HAI_INLINE V binomial(Streams& s, M m, V n, V p, V q, V log_q, const rng::DrawTables& tab) {
  m &= gt(n, zero()) & gt(p, zero());
  if (!m) return zero();
  const M all = m & ~gt(q, zero());  // p = 1: everyone moves
  V out = blend(all, zero(), n);
  m &= ~all;
  const M flip = m & gt(p, set1(0.5));  // the complementary leap, without pow_q / lpq tables
  if (flip) {
    const V pf = q, qf = p;
    p = blend(flip, p, pf);
    q = blend(flip, q, qf);
    log_q = blend(flip, log_q, det_log(qf));
    const M again = flip & gt(p, set1(0.5));
    s.fallback |= again;
    m &= ~again;
  }
  const M tabbed = m & ~flip;
  const V np = mul(n, p);
  const M inv = m & lt(np, set1(10.0)), bt = m & ~inv;
  V x = zero();
  if (inv) {
    const V u = s.take(inv);
    const M live = inv & ~le(u, sub(sub(set1(1.0), np), set1(rng::kSqueezeSlack)));
    if (live) {
      const M looked = live & tabbed & lt(n, set1(static_cast<double>(tab.pow_q_size)));
      V r = gather(looked, tab.pow_q, to_i64(n));
      if (live & ~looked) r = blend(live & ~looked, r, det_exp(mul(n, log_q)));
      x = inversion(live, n, div(p, q), u, r);
    }
  }
  if (bt) x = blend(bt, x, btrs(s, bt, n, p, q, np, tab, tabbed));
  return blend(m, out, blend(flip, x, sub(n, x)));
}

// rng::binomial_rate on the lanes of m: Binomial(n, 1 - exp(-rate)).
V binomial_rate(Streams& s, M m, V n, V rate, const rng::DrawTables& general) {
  m &= gt(n, zero()) & gt(rate, zero());
  if (!m) return zero();
  const V x = mul(n, rate);
  const M inv = m & lt(rate, set1(0.69)) & lt(x, set1(9.99)), rest = m & ~inv;
  // Leap::of(rate): p = -expm1(-rate), q = 1 - p below 1/2 (else exp(-rate)), log q = -rate
  const auto leap_of = [&](M lanes, V& p, V& q) {
    p = neg(det_expm1(neg(rate)));
    const M half = lanes & lt(p, set1(0.5));
    q = sub(set1(1.0), p);
    if (lanes & ~half) q = blend(lanes & ~half, q, det_exp(neg(rate)));
  };
  V out = zero();
  if (inv) {
    const V u = s.take(inv);
    const M live = inv & ~le(u, sub(sub(set1(1.0), x), set1(rng::kSqueezeSlack)));
    if (live) {
      V p, q;
      leap_of(live, p, q);
      out = inversion(live, n, div(p, q), u, det_exp(neg(x)));
    }
  }
  if (rest) {
    V p, q;
    leap_of(rest, p, q);
    out = blend(rest, out, binomial(s, rest, n, p, q, neg(rate), general));
  }
  return out;
}

struct Leap3 {  // a constant leap, broadcast
  V p, q, log_q;
  explicit Leap3(const rng::Leap& t) : p(set1(t.p)), q(set1(t.q)), log_q(set1(t.log_q)) {}
};

// The cell (i, k) by the scalar code (what the vectors reproduce).
void scalar_cell(const MetapopProblem& p, const MetapopState<int32_t>& st, const int32_t* i_now, int64_t i, int64_t k,
                 int64_t t, uint32_t gsub, double dt, double inv_n, double away, double row, const Leaps& L,
                 bool day_end) {
  const double lam = metapop::force(p, i, k, t, i_now[i * p.runs + k] * inv_n, away, row);
  metapop::leap(p, st, i_now, i, k, t, gsub, dt, lam, L.onset, L.recovery, L.onset_tab, L.recovery_tab, L.general,
                L.admit, L.discharge, L.admit_tab, L.discharge_tab, day_end);
}

}  // namespace
}  // namespace healthai::cpu::avx512::x16

namespace healthai::cpu {

void leap_region_avx512(const MetapopProblem& p, const MetapopState<int32_t>& st, const int32_t* i_now, int64_t i,
                        int64_t t, uint32_t gsub, double dt, const uint8_t* infectious, double row, const Leaps& L,
                        bool day_end) {
  using namespace avx512::x16;
  // gather_live's terms in its order: the neighbours j with some I > 0, weight metapop::edge_coef
  thread_local std::vector<std::pair<const int32_t*, double>> live;
  live.clear();
  for (int64_t e = p.indptr[i]; e < p.indptr[i + 1]; ++e) {
    const int64_t j = p.indices[e];
    if (infectious[j]) live.emplace_back(i_now + j * p.runs, metapop::edge_coef(p, t, i, e));
  }
  const int64_t xr = t * p.n_regions + i, runs = p.runs;
  const double cx = p.contact[xr], vdt = p.vacc[xr] * dt;
  const double inv_n = 1.0 / static_cast<double>(p.population[i]);
  const Leap3 onset(L.onset), recovery(L.recovery), admit(L.admit), discharge(L.discharge);
  const V peak_day = set1(static_cast<double>(p.step0 + t + 1));
  Streams s;
  s.region = static_cast<uint32_t>(i);
  s.gsub = gsub;
  s.key0 = static_cast<uint32_t>(p.seed);
  s.key1 = static_cast<uint32_t>(p.seed >> 32);
  for (int64_t k0 = 0; k0 < runs; k0 += kLanes) {
    const M lanes = tail_mask(runs - k0);
    const int64_t x0 = i * runs + k0;
    s.reset(k0);
    V away = zero();  // sum_j w_ij I_j / N_j, summed as gather_live does
    for (const auto& [src, w] : live) away = add(away, mul(set1(w), load_i32(lanes, src + k0)));
    alignas(64) double away_k[kLanes];
    if (runs - k0 < kMinLanes) {  // a short tail: cheaper cell by cell
      storeu(lanes, away_k, away);
      for (int64_t k = k0; k < runs; ++k) {
        scalar_cell(p, st, i_now, i, k, t, gsub, dt, inv_n, away_k[k - k0], row, L, day_end);
      }
      continue;
    }
    const V S = load_i32(lanes, st.s + x0), E = load_i32(lanes, st.e + x0), I = load_i32(lanes, i_now + x0);
    // metapop::force: beta_k contact ((1 - row) I/N + away)
    const V own = mul(I, set1(inv_n));
    const V lambda = mul(mul(loadu(lanes, p.beta + k0), set1(cx)), add(mul(set1(1.0 - row), own), away));
    const V new_e = binomial_rate(s, lanes, S, mul(lambda, set1(dt)), L.general);
    const V new_v = vdt > 0.0 ? binomial_rate(s, lanes & ~s.fallback, sub(S, new_e), set1(vdt), L.general) : zero();
    const V new_i = binomial(s, lanes & ~s.fallback, E, onset.p, onset.q, onset.log_q, L.onset_tab);
    const V new_r = binomial(s, lanes & ~s.fallback, I, recovery.p, recovery.q, recovery.log_q, L.recovery_tab);
    V new_h = zero(), new_d = zero();
    if (st.h != nullptr) {
      const V H = load_i32(lanes, st.h + x0);
      new_h = binomial(s, lanes & ~s.fallback, new_r, admit.p, admit.q, admit.log_q, L.admit_tab);
      new_d = binomial(s, lanes & ~s.fallback, H, discharge.p, discharge.q, discharge.log_q, L.discharge_tab);
      store_i32(lanes & ~s.fallback, st.h + x0, add(H, sub(new_h, new_d)));
    }
    const M done = lanes & ~s.fallback;
    const V i_next = sub(add(I, new_i), new_r);
    store_i32(done, st.s + x0, sub(sub(S, new_e), new_v));
    store_i32(done, st.e + x0, sub(add(E, new_e), new_i));
    store_i32(done, st.i + x0, i_next);
    store_i32(done, st.r + x0, add(load_i32(done, st.r + x0), add(add(sub(new_r, new_h), new_d), new_v)));
    store_i32(done, st.incidence + x0, add(load_i32(done, st.incidence + x0), new_i));
    if (day_end) {
      const M up = done & gt(i_next, load_i32(done, st.peak_value + x0));
      store_i32(up, st.peak_value + x0, i_next);
      store_i32(up, st.peak_step + x0, peak_day);
    }
    if (s.fallback) storeu(lanes, away_k, away);
    for (unsigned f = s.fallback; f != 0; f &= f - 1) {
      const int l = __builtin_ctz(f);
      scalar_cell(p, st, i_now, i, k0 + l, t, gsub, dt, inv_n, away_k[l], row, L, day_end);
    }
  }
}

void simd_math_check(const double* x, int64_t n, double* out) {
  using namespace avx512::x16;
  std::vector<double> table(1000);  // a short log-factorial table: gathers below 1000, Stirling above
  for (size_t k = 0; k < table.size(); ++k) table[k] = rng::log_factorial(static_cast<double>(k));
  rng::DrawTables tab;
  tab.log_fact = table.data();
  tab.log_fact_size = static_cast<int64_t>(table.size());
  for (int64_t j = 0; j < n; j += kLanes) {
    const M m = tail_mask(n - j);
    const V v = loadu(m, x + j), a = abs(v);
    storeu(m, out + j, det_exp(v));
    storeu(m, out + n + j, det_expm1(v));
    storeu(m, out + 2 * n + j, det_log(a));
    storeu(m, out + 3 * n + j, log_fact(m, floor(a), tab));
  }
}

}  // namespace healthai::cpu

#undef HAI_INLINE
#pragma GCC pop_options
