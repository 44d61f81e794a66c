#pragma once
/// @file
/// `Latch`: a one-way "it happened" flag that plain threads block on and coroutines
/// await, any number of each. A training loop written as ordinary code waits for a
/// checkpoint's snapshot with `wait()`; one written as a coroutine `co_await`s
/// `async_wait()`. Setting it twice is harmless.

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "corockpt/runtime/completion.hpp"
#include "corockpt/runtime/task.hpp"

namespace corockpt {

class Latch {
 public:
  void set() {
    std::vector<std::shared_ptr<Completion<void>>> waiters;
    {
      std::lock_guard lock(mutex_);
      if (set_) return;
      set_ = true;
      waiters.swap(waiters_);
    }
    changed_.notify_all();
    for (auto& w : waiters) w->complete(Result<void>{});
  }

  bool is_set() const {
    std::lock_guard lock(mutex_);
    return set_;
  }

  /// Blocks the calling thread until set. Never call it on the runtime's io thread.
  void wait() const {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return set_; });
  }

  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [this] { return set_; });
  }

  /// Resumes the awaiting coroutine on its own executor once set.
  /// @returns Errc::cancelled if the wait is cancelled.
  Task<void> async_wait() {
    std::shared_ptr<Completion<void>> done = Completion<void>::make();
    {
      std::lock_guard lock(mutex_);
      if (set_) co_return Result<void>{};
      waiters_.push_back(done);
    }
    co_return co_await done->wait();
  }

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  bool set_ = false;
  std::vector<std::shared_ptr<Completion<void>>> waiters_;
};

}  // namespace corockpt
