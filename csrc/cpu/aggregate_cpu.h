// CPU entry points of the CSR aggregation (same signatures as csrc/cuda/aggregate_cuda.h).
#pragma once

#include <vector>

#include "aggregate.h"

namespace healthai::cpu {

void aggregate_forward_cpu(const CsrProblem& p, const void* x, void* out, int64_t* argmax, int num_threads);
void aggregate_backward_cpu(const CsrProblem& p, const CsrTranspose& t, const void* grad_out, const void* x,
                            const int64_t* argmax, void* grad_x, void* grad_w, int num_threads);
void csr_transpose_cpu(const CsrProblem& p, void* t_indptr, void* t_indices, void* t_edge_ids);
void check_values_cpu(const CsrProblem& p, int num_threads);
int64_t check_graph_cpu(const CsrProblem& p, int num_threads);
// The first argmax entry that is neither -1 nor an edge of its row (at = -1 when all are fine).
ArgmaxFault check_argmax_cpu(const CsrProblem& p, const int64_t* argmax, int num_threads);
// Rows [r0, r1) of every batch item on the calling thread (AVX2 or generic kernels).
void forward_rows_cpu(const CsrProblem& p, const void* x, void* out, int64_t* argmax, int64_t r0, int64_t r1);

// Row ranges [bounds[k], bounds[k+1]) of about equal work (edges + rows), one per task.
std::vector<int64_t> balanced_row_chunks(const CsrProblem& p, int n_tasks);
// How many threads are worth starting for `work` multiply-adds.
int useful_threads(int64_t work, int num_threads);

}  // namespace healthai::cpu
