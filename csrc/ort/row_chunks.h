// Runs the CPU forward of a checked graph on ONNX Runtime's intra-op pool (KernelContext::ParallelFor).
// Rows are split once, by healthai::row_chunks (edge-balanced); each task runs the row kernels of one
// chunk of one batch item on its thread (healthai::aggregate_forward_rows: no second chunking).
#pragma once

#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <vector>

#include "aggregate.h"
#include "first_error.h"
#include "ort/ort_ranges.h"  // kMaxTasks

namespace healthai::ort {

constexpr int64_t kWorkPerTask = 1 << 16;  // multiply-adds below which another task is not worth it

// Task t = (batch item b, row chunk k): rows bounds[k] .. bounds[k+1] of batch item b.
struct RowChunks {
  CsrProblem item;  // the problem as one batch item (batch = 1)
  const char* x = nullptr;
  char* out = nullptr;
  int64_t x_stride = 0, out_stride = 0;  // bytes per batch item
  std::vector<int64_t> bounds;
  FirstError error;

  static void run(void* self, size_t task) {
    auto* c = static_cast<RowChunks*>(self);
    if (c->error.failed()) return;  // the call fails anyway: skip the remaining work
    const int64_t n_chunks = static_cast<int64_t>(c->bounds.size()) - 1;
    const int64_t b = static_cast<int64_t>(task) / n_chunks, k = static_cast<int64_t>(task) % n_chunks;
    try {
      aggregate_forward_rows(c->item, c->x + b * c->x_stride, c->out + b * c->out_stride, nullptr, c->bounds[k],
                             c->bounds[k + 1]);
    } catch (...) {
      c->error.capture();
    }
  }
};

inline void forward_on_ort_threads(const Ort::KernelContext& ctx, const CsrProblem& p, const void* x, void* out,
                                   int64_t elem) {
  if (p.n_rows == 0 || p.feat == 0 || p.batch == 0) return;
  const int64_t work = (p.nnz + p.n_rows) * p.feat * p.batch;
  const int64_t tasks = std::clamp<int64_t>(work / kWorkPerTask, 1, kMaxTasks);
  if (tasks == 1) {
    aggregate_forward_rows(p, x, out, nullptr, 0, p.n_rows);
    return;
  }
  RowChunks chunks;
  chunks.item = p;
  chunks.item.batch = 1;
  chunks.x = static_cast<const char*>(x);
  chunks.out = static_cast<char*>(out);
  chunks.x_stride = p.n_cols * p.feat * elem;
  chunks.out_stride = p.n_rows * p.feat * elem;
  chunks.bounds = row_chunks(p, static_cast<int>(std::clamp<int64_t>(tasks / p.batch, 1, p.n_rows)));
  const size_t n = static_cast<size_t>(p.batch) * (chunks.bounds.size() - 1);
  ctx.ParallelFor(&RowChunks::run, n, 0, &chunks);
  chunks.error.rethrow_if_failed();
}

}  // namespace healthai::ort
