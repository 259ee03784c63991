// CUDA healthai.QuantileHead (semantics in cpu/quantile_head_cpu.h): one thread per (batch item,
// region, step). Device pointers of a shape already checked by cpu::check_quantile_head; `stream` is
// a cudaStream_t. Launch errors throw.
#pragma once

#include "cpu/quantile_head_cpu.h"

namespace healthai::cuda {

void quantile_head(const cpu::QuantileHeadShape& shape, const float* raw, const float* base,
                   const float* scale, const float* shift, float* out, void* stream);
void quantile_head(const cpu::QuantileHeadShape& shape, const double* raw, const double* base,
                   const double* scale, const double* shift, double* out, void* stream);

}  // namespace healthai::cuda
