// ONNX Runtime op healthai.QuantileHead (opset 1), float or double: the forecaster's quantile head in
// one pass (semantics in cpu/quantile_head_cpu.h). Inputs raw [B, N, S, Q], base [B, N, S],
// scale [N], shift [N]; attribute median_index; output [B, S, N, Q]. CPU on ORT's intra-op pool, and
// (built with CUDA) the CUDA execution provider.
#pragma once

#include <onnxruntime_cxx_api.h>

namespace healthai::ort {

// Adds the QuantileHead kernels to `domain`; the ops are static (they outlive every session).
void add_quantile_head_ops(Ort::CustomOpDomain& domain);

}  // namespace healthai::ort
