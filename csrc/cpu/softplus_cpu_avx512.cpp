// The float32 softplus loop for AVX-512 (F, DQ, VL) + FMA: 16 lanes (see CMakeLists.txt for the flags).
#define HEALTHAI_ISA avx512
#include "cpu/softplus_cpu_kernels.h"
