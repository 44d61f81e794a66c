#pragma once
/// @file
/// `TaskHandle<T>`: how plain synchronous code holds a task spawned on the runtime —
/// poll it, wait for it, take its result, cancel it. Coroutines do not need it: they
/// `co_await` the task itself.

#include <asio/post.hpp>

#include <chrono>
#include <memory>
#include <mutex>

#include "corockpt/runtime/detail/task_state.hpp"
#include "corockpt/runtime/error.hpp"

namespace corockpt {

class Runtime;

/// Thread rules: every member may be called from any thread, concurrently; `get` and
/// `wait_for` block (never on the runtime's io thread: `get` refuses there).
template <class T>
class TaskHandle {
 public:
  /// An empty handle (`valid()` false): only assignment and `valid()` may be called.
  TaskHandle() = default;

  bool valid() const { return state_ != nullptr; }

  /// True once the task has finished (successfully or not). Never blocks.
  bool ready() const {
    std::lock_guard lock(state_->mutex);
    return state_->result.has_value();
  }

  /// Blocks until the task finishes or `timeout` passes. @returns whether it finished.
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    std::unique_lock lock(state_->mutex);
    return state_->ready.wait_for(lock, timeout, [&] { return state_->result.has_value(); });
  }

  /// Blocks until the task finishes and moves its result out (call once).
  /// @returns Errc::invalid_argument when called on the runtime's own thread, where
  /// waiting would deadlock; Errc::cancelled when the task was cancelled.
  Result<T> get() {
    if (state_->on_io_thread && state_->on_io_thread()) {
      return fail(Errc::invalid_argument,
                  "TaskHandle::get() on the runtime's thread would deadlock; co_await the task");
    }
    std::unique_lock lock(state_->mutex);
    state_->ready.wait(lock, [&] { return state_->result.has_value(); });
    Result<T> out = std::move(*state_->result);
    state_->result = fail(Errc::invalid_argument, "TaskHandle::get() called twice");
    return out;
  }

  /// Asks the task to stop: the operation it awaits is cancelled and it ends with
  /// Errc::cancelled unless it finishes first. Does not block.
  void cancel() {
    asio::post(state_->executor, [state = state_] {
      if (!state->finished_on_executor) state->signal.emit(asio::cancellation_type::terminal);
    });
  }

 private:
  friend class Runtime;  // spawn makes handles
  explicit TaskHandle(std::shared_ptr<detail::TaskState<T>> state) : state_(std::move(state)) {}

  std::shared_ptr<detail::TaskState<T>> state_;
};

}  // namespace corockpt
