// The row kernels compiled for one instruction set (see CMakeLists.txt for the flags).
#define HEALTHAI_ISA generic
#include "cpu/aggregate_cpu_kernels.h"
