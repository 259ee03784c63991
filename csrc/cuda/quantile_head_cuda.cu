// CUDA healthai.QuantileHead: see quantile_head_cuda.h. Each thread walks the levels of one
// (b, n, s) outwards from the median, as the CPU kernel does.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda/quantile_head_cuda.h"
#include "cuda/softplus_device.cuh"

namespace healthai::cuda {

namespace {

template <typename T>
__device__ __forceinline__ T clamp_at_zero(T v) {
  return v < T(0) ? T(0) : v;
}

template <typename T>
__global__ void quantile_head_kernel(cpu::QuantileHeadShape shape, const T* __restrict__ raw,
                                     const T* __restrict__ base, const T* __restrict__ scale,
                                     const T* __restrict__ shift, T* __restrict__ out) {
  const int64_t S = shape.steps, Q = shape.levels, N = shape.regions, m = shape.median_index;
  const int64_t total = shape.batch * N * S, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t row = i / S, s = i % S, b = row / N, n = row % N;
    const T* in = raw + i * Q;
    T* dst = out + ((b * S + s) * N + n) * Q;
    const T mid = base[i] + in[m], a = scale[n], c = shift[n];
    T offset = T(0);
    for (int64_t j = m + 1; j < Q; ++j) {
      offset += softplus_one(in[j]);
      dst[j] = clamp_at_zero((mid + offset) * a + c);
    }
    offset = T(0);
    for (int64_t j = m - 1; j >= 0; --j) {
      offset += softplus_one(in[j]);
      dst[j] = clamp_at_zero((mid - offset) * a + c);
    }
    dst[m] = clamp_at_zero(mid * a + c);
  }
}

template <typename T>
void launch(const cpu::QuantileHeadShape& shape, const T* raw, const T* base, const T* scale, const T* shift,
            T* out, void* stream) {
  const int64_t total = shape.batch * shape.regions * shape.steps;
  if (total <= 0 || shape.levels <= 0) return;
  constexpr int kThreads = 256;
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  const unsigned grid = static_cast<unsigned>(blocks < 65535 ? blocks : 65535);
  quantile_head_kernel<T><<<grid, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(shape, raw, base, scale,
                                                                                      shift, out);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("quantile head launch: ") + cudaGetErrorString(err));
  }
}

}  // namespace

void quantile_head(const cpu::QuantileHeadShape& shape, const float* raw, const float* base, const float* scale,
                   const float* shift, float* out, void* stream) {
  launch(shape, raw, base, scale, shift, out, stream);
}
void quantile_head(const cpu::QuantileHeadShape& shape, const double* raw, const double* base,
                   const double* scale, const double* shift, double* out, void* stream) {
  launch(shape, raw, base, scale, shift, out, stream);
}

}  // namespace healthai::cuda
