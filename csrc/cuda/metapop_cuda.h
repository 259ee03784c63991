// CUDA entry points of the metapopulation engine: host arrays in, host arrays out (the adapter copies
// them to the device and back), same Philox streams and cell arithmetic as the CPU engine.
#pragma once

#include "metapop.h"

namespace healthai::cuda {

void metapop_stochastic_cuda(const MetapopProblem& p, const MetapopState<int32_t>& st);
void metapop_deterministic_cuda(const MetapopProblem& p, const MetapopState<double>& st);

}  // namespace healthai::cuda
