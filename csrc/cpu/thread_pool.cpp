#include "cpu/thread_pool.h"

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "first_error.h"

namespace healthai::cpu {
namespace {

class ThreadPool {
 public:
  void run(int64_t n_chunks, int max_threads, const std::function<void(int64_t)>& fn) {
    std::lock_guard<std::mutex> call_lock(call_mu_);  // one parallel region at a time
    FirstError error;
    grow(max_threads - 1);
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = &fn;
      n_chunks_ = n_chunks;
      max_threads_ = max_threads;
      next_ = 0;
      open_ = true;
      error_ = &error;
      ++generation_;
    }
    wake_.notify_all();
    work();
    std::unique_lock<std::mutex> lock(mu_);
    open_ = false;  // workers that wake from now on skip this call
    done_.wait(lock, [&] { return active_ == 0; });
    fn_ = nullptr;
    error_ = nullptr;
    error.rethrow_if_failed();
  }

 private:
  void grow(int n_workers) {
    while (static_cast<int>(workers_.size()) < n_workers) {
      const int id = static_cast<int>(workers_.size()) + 1;
      workers_.emplace_back([this, id] { loop(id); });
      workers_.back().detach();  // lives as long as the process
    }
  }

  void work() {
    for (int64_t k = next_++; k < n_chunks_; k = next_++) {
      try {
        (*fn_)(k);
      } catch (...) {
        error_->capture();
      }
    }
  }

  void loop(int id) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (!open_ || id >= max_threads_) continue;
      ++active_;
      lock.unlock();
      work();
      lock.lock();
      if (--active_ == 0) done_.notify_one();
    }
  }

  std::mutex call_mu_, mu_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t)>* fn_ = nullptr;
  std::atomic<int64_t> next_{0};
  int64_t n_chunks_ = 0;
  int max_threads_ = 1, active_ = 0;
  uint64_t generation_ = 0;
  bool open_ = false;
  FirstError* error_ = nullptr;  // of the running call
};

ThreadPool* g_pool = nullptr;  // never destroyed: workers are detached
std::once_flag g_pool_once;

ThreadPool& pool() {
  std::call_once(g_pool_once, [] {
    g_pool = new ThreadPool();
    // A forked child has none of the parent's workers (and maybe a locked mutex): start afresh.
    pthread_atfork(nullptr, nullptr, [] { g_pool = new ThreadPool(); });
  });
  return *g_pool;
}

}  // namespace

void parallel_for(int64_t n_chunks, int max_threads, const std::function<void(int64_t)>& fn) {
  if (max_threads <= 1 || n_chunks <= 1) {
    for (int64_t k = 0; k < n_chunks; ++k) fn(k);
    return;
  }
  pool().run(n_chunks, max_threads, fn);
}

int hardware_threads() {
  // hardware_concurrency() reads /sys on every call (~15 us): ask once.
  static const int n = [] {
    const unsigned c = std::thread::hardware_concurrency();
    return c == 0 ? 1 : static_cast<int>(c);
  }();
  return n;
}

}  // namespace healthai::cpu
