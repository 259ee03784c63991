// softplus entry points: the float32 loop built for AVX-512 or AVX2 + FMA when the CPU has them, else the
// generic build.
#include "cpu/softplus_cpu.h"

#include <cmath>

#define HEALTHAI_ISA generic
#include "cpu/softplus_cpu_kernels.h"
#undef HEALTHAI_ISA

namespace healthai::cpu {

namespace avx512 {
void softplus_f32(const float* x, float* y, int64_t n);
}
namespace avx2 {
void softplus_f32(const float* x, float* y, int64_t n);
}

void softplus_f32(const float* x, float* y, int64_t n) {
  static const auto kernel = [] {
    __builtin_cpu_init();
    const bool fma = __builtin_cpu_supports("fma");
    if (fma && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl")) {
      return &avx512::softplus_f32;
    }
    return fma && __builtin_cpu_supports("avx2") ? &avx2::softplus_f32 : &generic::softplus_f32;
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
