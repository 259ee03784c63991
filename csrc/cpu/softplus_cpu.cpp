// softplus entry points: the float32 loop for AVX2 + FMA when the CPU has them, else the generic build.
#include "cpu/softplus_cpu.h"

#include <cmath>

#define HEALTHAI_ISA generic
#include "cpu/softplus_cpu_kernels.h"
#undef HEALTHAI_ISA

namespace healthai::cpu {

namespace avx2 {
void softplus_f32(const float* x, float* y, int64_t n);
}

void softplus_f32(const float* x, float* y, int64_t n) {
  static const auto kernel = [] {
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return avx2 ? &avx2::softplus_f32 : &generic::softplus_f32;
  }();
  kernel(x, y, n);
}

void softplus_f64(const double* x, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    y[i] = std::isnan(v) ? v : std::fmax(v, 0.0) + std::log1p(std::exp(-std::fabs(v)));
  }
}

}  // namespace healthai::cpu
