// The row kernels compiled for one instruction set (see CMakeLists.txt for the flags).
#define HEALTHAI_ISA avx2
#include "cpu/aggregate_cpu_kernels.h"
