// Multithreaded CPU kernels of the metapopulation engine (checked problems only; see metapop.h).
#pragma once

#include "metapop.h"

namespace healthai::cpu {

void metapop_stochastic_cpu(const MetapopProblem& p, const MetapopState<int32_t>& st, int num_threads);
void metapop_deterministic_cpu(const MetapopProblem& p, const MetapopState<double>& st, int num_threads);

}  // namespace healthai::cpu
