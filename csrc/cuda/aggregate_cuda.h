// CUDA entry points of the CSR aggregation (same signatures as csrc/cpu/aggregate_cpu.h plus a stream).
// All pointers are device pointers; outputs are preallocated by the caller; `stream` is a cudaStream_t.
#pragma once

#include "aggregate.h"

namespace healthai::cuda {

void aggregate_forward_cuda(const CsrProblem& p, const void* x, void* out, int64_t* argmax, void* stream);
void aggregate_backward_cuda(const CsrProblem& p, const CsrTranspose& t, const void* grad_out, const void* x,
                             const int64_t* argmax, void* grad_x, void* grad_w, void* stream);
void csr_transpose_cuda(const CsrProblem& p, void* t_indptr, void* t_indices, void* t_edge_ids, void* stream);
// Checks indptr/indices on the device; throws like the CPU checks (synchronises the stream).
void check_values_cuda(const CsrProblem& p, void* stream);
// Finds the first argmax entry that is neither -1 nor an edge of its row (synchronises the stream).
ArgmaxFault check_argmax_cuda(const CsrProblem& p, const int64_t* argmax, void* stream);

}  // namespace healthai::cuda
