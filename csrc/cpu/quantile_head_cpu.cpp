// healthai.QuantileHead on the CPU: see quantile_head_cpu.h. Softplus runs over a row's steps x levels
// values at once (the vectorised healthai::cpu::softplus_*), then each step's cumulative offsets are
// summed outwards from the median, scaled, clamped and written as one contiguous run of out.
#include "cpu/quantile_head_cpu.h"

#include <stdexcept>
#include <string>

#include "cpu/softplus_cpu.h"

namespace healthai::cpu {

namespace {

std::string dims(const int64_t* shape, int64_t rank) {
  std::string text = "[";
  for (int64_t i = 0; i < rank; ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

template <typename T>
inline T clamp_at_zero(T v) {
  return v < T(0) ? T(0) : v;  // NaN stays NaN, as torch.clamp
}

}  // namespace

QuantileHeadShape check_quantile_head(const int64_t* raw_shape, int64_t raw_rank, const int64_t* base_shape,
                                      int64_t base_rank, int64_t scale_size, int64_t shift_size,
                                      int64_t median_index) {
  if (raw_rank != 4) {
    throw std::invalid_argument("raw must be [batch, regions, steps, levels], got " + dims(raw_shape, raw_rank));
  }
  QuantileHeadShape s{raw_shape[0], raw_shape[1], raw_shape[2], raw_shape[3], median_index};
  if (base_rank != 3 || base_shape[0] != s.batch || base_shape[1] != s.regions || base_shape[2] != s.steps) {
    throw std::invalid_argument("base must be [batch, regions, steps] = " + dims(raw_shape, 3) + ", got " +
                                dims(base_shape, base_rank));
  }
  if (scale_size != s.regions || shift_size != s.regions) {
    throw std::invalid_argument("scale and shift must hold one value per region (" + std::to_string(s.regions) +
                                "), got " + std::to_string(scale_size) + " and " + std::to_string(shift_size));
  }
  if (s.levels < 1 || median_index < 0 || median_index >= s.levels) {
    throw std::invalid_argument("median_index " + std::to_string(median_index) + " is not a level of " +
                                std::to_string(s.levels));
  }
  return s;
}

// Steps [s0, s0 + K) of one row: K independent cumulative sums side by side, so the adds overlap
// instead of waiting on each other (one step's 11 adds are a chain of dependent additions).
template <int K, typename T>
inline void steps_block(const QuantileHeadShape& shape, const T* raw, const T* inc, const T* base, T a, T c,
                        T* out_n, int64_t s0) {
  const int64_t Q = shape.levels, m = shape.median_index, step_stride = shape.regions * Q;
  T mid[K], up[K], down[K];
  for (int k = 0; k < K; ++k) {
    mid[k] = base[s0 + k] + raw[(s0 + k) * Q + m];
    up[k] = down[k] = T(0);
    out_n[(s0 + k) * step_stride + m] = clamp_at_zero(mid[k] * a + c);
  }
  for (int64_t d = 1; m + d < Q || m - d >= 0; ++d) {
    for (int k = 0; k < K; ++k) {
      const T* row = inc + (s0 + k) * Q;
      T* dst = out_n + (s0 + k) * step_stride;
      if (m + d < Q) {
        up[k] += row[m + d];  // summed apart from the median, as the graph's offset matmul does
        dst[m + d] = clamp_at_zero((mid[k] + up[k]) * a + c);
      }
      if (m - d >= 0) {
        down[k] += row[m - d];
        dst[m - d] = clamp_at_zero((mid[k] - down[k]) * a + c);
      }
    }
  }
}

template <typename T>
void quantile_head_rows(const QuantileHeadShape& shape, const T* raw, const T* base, const T* scale,
                        const T* shift, T* out, T* scratch, int64_t row_begin, int64_t row_end) {
  constexpr int kBlock = 8;
  const int64_t S = shape.steps, Q = shape.levels, N = shape.regions;
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t b = row / N, n = row % N;
    const T* raw_row = raw + row * S * Q;
    softplus(raw_row, scratch, S * Q);
    T* out_n = out + (b * S * N + n) * Q;  // out[b, 0, n, :]
    int64_t s = 0;
    for (; s + kBlock <= S; s += kBlock) {
      steps_block<kBlock>(shape, raw_row, scratch, base + row * S, scale[n], shift[n], out_n, s);
    }
    for (; s < S; ++s) steps_block<1>(shape, raw_row, scratch, base + row * S, scale[n], shift[n], out_n, s);
  }
}

template void quantile_head_rows<float>(const QuantileHeadShape&, const float*, const float*, const float*,
                                        const float*, float*, float*, int64_t, int64_t);
template void quantile_head_rows<double>(const QuantileHeadShape&, const double*, const double*, const double*,
                                         const double*, double*, double*, int64_t, int64_t);

}  // namespace healthai::cpu
