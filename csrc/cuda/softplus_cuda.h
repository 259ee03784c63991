// CUDA softplus for the ONNX Runtime op healthai.Softplus: y = max(x, 0) + log1p(e^-|x|), elementwise.
// x and y are device pointers of n elements; `stream` is a cudaStream_t. Launch errors throw.
#pragma once

#include <cstdint>

namespace healthai::cuda {

void softplus(const float* x, float* y, int64_t n, void* stream);
void softplus(const double* x, double* y, int64_t n, void* stream);

}  // namespace healthai::cuda
