// A small persistent thread pool. parallel_for(n_chunks, max_threads, fn) runs fn(0) .. fn(n_chunks-1),
// each exactly once; the caller and up to max_threads - 1 workers take the next chunk until none is
// left. The caller never waits for a worker that has not started yet: on a busy machine a late worker
// simply finds no work, so a delayed thread never holds up the call.
#pragma once

#include <cstdint>
#include <functional>

namespace healthai::cpu {

// The first exception thrown by a chunk is re-thrown in the caller (remaining chunks still run).
void parallel_for(int64_t n_chunks, int max_threads, const std::function<void(int64_t)>& fn);

int hardware_threads();

}  // namespace healthai::cpu
