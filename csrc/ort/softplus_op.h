// ONNX Runtime op healthai.Softplus (opset 1): y = log(1 + e^x), elementwise, any shape, float or double.
// ORT's own Softplus kernel is scalar; this one runs healthai::cpu::softplus_* (vectorised for float32)
// on ORT's intra-op pool, and (built with CUDA) on the CUDA execution provider.
#pragma once

#include <onnxruntime_cxx_api.h>

namespace healthai::ort {

// Adds the Softplus kernels (CPU float/double, CUDA float/double when built with CUDA) to `domain`.
// The ops are static: they outlive every session, as ORT requires.
void add_softplus_ops(Ort::CustomOpDomain& domain);

}  // namespace healthai::ort
