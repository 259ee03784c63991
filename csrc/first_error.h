// First-error-wins slot for work split over threads: the first exception thrown by any task is kept
// (type and message) and re-thrown by the caller once every task has returned; later ones are dropped.
// Used by healthai's own pool (cpu/thread_pool.cpp) and by the ONNX Runtime op's row chunks.
#pragma once

#include <atomic>
#include <exception>

namespace healthai {

class FirstError {
 public:
  // Call in a catch block: keeps the exception being handled unless one was kept already.
  void capture() noexcept {
    bool expected = false;
    if (claimed_.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {
      error_ = std::current_exception();
      failed_.store(true, std::memory_order_release);
    }
  }
  // True once an exception is kept (tasks may stop early); never reverts.
  bool failed() const noexcept { return failed_.load(std::memory_order_acquire); }
  // Re-throws the kept exception. Call after every task has returned (the join orders the writes).
  void rethrow_if_failed() const {
    if (failed()) std::rethrow_exception(error_);
  }

 private:
  std::atomic<bool> claimed_{false};  // won by the one thread that stores error_
  std::atomic<bool> failed_{false};   // set after error_ is stored: readers see a complete error_
  std::exception_ptr error_;
};

}  // namespace healthai
