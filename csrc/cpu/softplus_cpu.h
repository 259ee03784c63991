// softplus(x) = log(1 + e^x) over a contiguous array, overflow-free: max(x, 0) + log1p(e^-|x|).
// float32: branch-free polynomial exp/log (Cephes forms) that the compiler vectorises, picked at run time
// for AVX-512 (16 lanes), AVX2+FMA or the generic build; within 1.6 ulp of the exact value for |x| < 87
// (every 255th float checked, every build) and within 1.7e-38 absolute beyond (e^-|x| is dropped
// there). float64: libm (exp, log1p), one element at a time.
// NaN in, NaN out; +inf gives +inf, -inf gives 0.
#pragma once

#include <cstdint>

namespace healthai::cpu {

void softplus_f32(const float* x, float* y, int64_t n);
void softplus_f64(const double* x, double* y, int64_t n);

// The same by element type (for the ops' float/double templates).
inline void softplus(const float* x, float* y, int64_t n) { softplus_f32(x, y, n); }
inline void softplus(const double* x, double* y, int64_t n) { softplus_f64(x, y, n); }

}  // namespace healthai::cpu
