// The float32 softplus loop for AVX2 + FMA (see CMakeLists.txt for the flags).
#define HEALTHAI_ISA avx2
#include "cpu/softplus_cpu_kernels.h"
