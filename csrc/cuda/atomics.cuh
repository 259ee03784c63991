// Device helpers shared by the CUDA kernels.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace healthai::cuda {

// max that propagates NaN like numpy's maximum: a NaN candidate replaces a number, never the reverse.
template <typename T>
__device__ __forceinline__ bool take_max(T v, T best) {
  return v > best || (isnan(v) && !isnan(best));
}

__device__ __forceinline__ void atomic_min_u64(unsigned long long* addr, unsigned long long v) {
  atomicMin(addr, v);
}

template <typename T>
__device__ __forceinline__ void atomic_add(T* addr, T v) {
  atomicAdd(addr, v);  // native for float and (sm_60+) double
}

// Grid-stride loop over [0, n).
#define HEALTHAI_CUDA_LOOP(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

}  // namespace healthai::cuda
