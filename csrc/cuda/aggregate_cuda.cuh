// Launchers of the CUDA kernels of the CSR aggregation (defined and instantiated in aggregate_cuda.cu
// for T in {float, double} x I in {int32_t, int64_t}). Host code only: includable from .cpp files.
// Kernels use one thread per output element (b, row, f): neighbouring threads read neighbouring
// features of the same source row, so the gathers are coalesced.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "aggregate.h"

namespace healthai::cuda {

template <typename T, typename I>
void launch_forward(const CsrProblem& p, const T* x, T* out, int64_t* argmax, cudaStream_t stream);

// grad_x through the transpose (sum/mean: weighted sum; max: only the recorded edge).
template <typename T, typename I>
void launch_grad_x(const CsrProblem& p, const CsrTranspose& t, const T* grad_out, const int64_t* argmax,
                   T* grad_x, cudaStream_t stream);

// grad_w: sum/mean one thread per edge; max atomically per output element (grad_w zeroed first). The
// max kernel skips argmax entries outside their row (callers check argmax first: check_argmax).
template <typename T, typename I>
void launch_grad_w(const CsrProblem& p, const T* grad_out, const T* x, const int64_t* argmax, T* grad_w,
                   cudaStream_t stream);

// bad[0] = first row r with indptr[r+1] < indptr[r], bad[1] = first edge with an index out of range
// (both left at UINT64_MAX when none).
template <typename I>
void launch_check(const CsrProblem& p, unsigned long long* bad, cudaStream_t stream);

// bad[0] = first flat position k of argmax whose value is neither -1 nor an edge of its row
// (left at UINT64_MAX when none).
template <typename I>
void launch_check_argmax(const CsrProblem& p, const int64_t* argmax, unsigned long long* bad, cudaStream_t stream);

}  // namespace healthai::cuda
