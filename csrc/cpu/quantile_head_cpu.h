// The forecaster's quantile head in one pass (ONNX Runtime op healthai.QuantileHead).
//
// For every batch item b, region n and step s, with m = median_index and sp = softplus:
//   median = base[b, n, s] + raw[b, n, s, m],
//   q[j] = median + sum over k in (m, j] of sp(raw[b, n, s, k])   for j > m,
//   q[j] = median - sum over k in [j, m) of sp(raw[b, n, s, k])   for j < m,  q[m] = median,
//   out[b, s, n, j] = max(q[j] * scale[n] + shift[n], 0)            (NaN stays NaN).
// raw [B, N, S, Q], base [B, N, S], scale and shift [N]; out [B, S, N, Q].
// This is STGNNForecaster.forward after its head: softplus increments, their cumulative offsets from
// the median (a [Q-1, Q] matmul in the graph), the transpose to steps first, the per-region scaling
// back to counts and the clamp at zero; eight ONNX nodes and five full-size intermediates otherwise.
#pragma once

#include <cstdint>

namespace healthai::cpu {

struct QuantileHeadShape {
  int64_t batch = 0, regions = 0, steps = 0, levels = 0, median_index = 0;

  int64_t rows() const { return batch * regions; }  // one row = one (b, n): steps x levels values
};

// Throws std::invalid_argument naming the input when the shapes do not fit together (call first).
QuantileHeadShape check_quantile_head(const int64_t* raw_shape, int64_t raw_rank, const int64_t* base_shape,
                                      int64_t base_rank, int64_t scale_size, int64_t shift_size,
                                      int64_t median_index);

// Rows [row_begin, row_end) of a checked problem; `scratch` holds steps x levels values.
template <typename T>
void quantile_head_rows(const QuantileHeadShape& shape, const T* raw, const T* base, const T* scale,
                        const T* shift, T* out, T* scratch, int64_t row_begin, int64_t row_end);

}  // namespace healthai::cpu
