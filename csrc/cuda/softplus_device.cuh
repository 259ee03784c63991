// softplus(x) = max(x, 0) + log1p(e^-|x|) for one value in device code, NaN in, NaN out (fmax alone
// would drop it). Shared by the Softplus and QuantileHead CUDA kernels.
#pragma once

namespace healthai::cuda {

__device__ __forceinline__ float softplus_one(float x) {
  return x != x ? x : fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x)));
}
__device__ __forceinline__ double softplus_one(double x) {
  return x != x ? x : fmax(x, 0.0) + log1p(exp(-fabs(x)));
}

}  // namespace healthai::cuda
