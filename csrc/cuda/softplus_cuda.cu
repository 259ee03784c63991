// CUDA softplus (see softplus_cuda.h): a grid-stride loop over CUDA's own expf/log1pf (exp/log1p).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda/softplus_cuda.h"
#include "cuda/softplus_device.cuh"

namespace healthai::cuda {

namespace {

template <typename T>
__global__ void softplus_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    y[i] = softplus_one(x[i]);
  }
}

template <typename T>
void launch(const T* x, T* y, int64_t n, void* stream) {
  if (n <= 0) return;
  constexpr int kThreads = 256;
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  const unsigned grid = static_cast<unsigned>(blocks < 65535 ? blocks : 65535);
  softplus_kernel<T><<<grid, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(x, y, n);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("softplus launch: ") + cudaGetErrorString(err));
}

}  // namespace

void softplus(const float* x, float* y, int64_t n, void* stream) { launch(x, y, n, stream); }
void softplus(const double* x, double* y, int64_t n, void* stream) { launch(x, y, n, stream); }

}  // namespace healthai::cuda
