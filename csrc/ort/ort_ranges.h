// Runs work over [0, units) on ONNX Runtime's intra-op pool (KernelContext::ParallelFor) in equal
// contiguous ranges, one task per range; on the calling thread alone when the work is small. The
// first exception of any task is re-thrown once all have returned. Used by the elementwise-typed ops
// (Softplus, QuantileHead); the graph aggregation splits its rows by edges instead (row_chunks.h).
#pragma once

#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cstdint>

#include "first_error.h"

namespace healthai::ort {

constexpr int64_t kMaxTasks = 256;  // tasks per call at most

// fn(begin, end) over [0, units); `work` / `work_per_task` tasks (1 .. kMaxTasks).
template <typename Fn>
void for_ranges_on_ort_threads(const Ort::KernelContext& ctx, int64_t units, int64_t work, int64_t work_per_task,
                               Fn&& fn) {
  const int64_t tasks = std::clamp<int64_t>(work / work_per_task, 1, kMaxTasks);
  if (tasks == 1) {
    fn(int64_t{0}, units);
    return;
  }
  struct Ranges {
    Fn* fn;
    int64_t units, per_task;
    FirstError error;

    static void run(void* self, size_t task) {
      auto* r = static_cast<Ranges*>(self);
      const int64_t begin = static_cast<int64_t>(task) * r->per_task;
      try {
        (*r->fn)(begin, std::min(begin + r->per_task, r->units));
      } catch (...) {
        r->error.capture();
      }
    }
  };
  Ranges ranges{&fn, units, (units + tasks - 1) / tasks, {}};
  ctx.ParallelFor(&Ranges::run, static_cast<size_t>((units + ranges.per_task - 1) / ranges.per_task), 0, &ranges);
  ranges.error.rethrow_if_failed();
}

}  // namespace healthai::ort
