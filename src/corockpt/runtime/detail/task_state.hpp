#pragma once
/// @file
/// What a TaskHandle shares with the task it watches: the task's executor and
/// cancellation, and its result once it has one. Runtime::spawn makes it; users hold a
/// TaskHandle.

#include <asio/any_io_executor.hpp>
#include <asio/cancellation_signal.hpp>

#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>

#include "corockpt/runtime/error.hpp"

namespace corockpt::detail {

template <class T>
struct TaskState {
  asio::any_io_executor executor;
  std::function<bool()> on_io_thread;
  asio::cancellation_signal signal;  // touched on `executor` only
  bool finished_on_executor = false;  // ditto

  std::mutex mutex;
  std::condition_variable ready;
  std::optional<Result<T>> result;

  void finish(Result<T> value) {
    finished_on_executor = true;
    {
      std::lock_guard lock(mutex);
      result.emplace(std::move(value));
    }
    ready.notify_all();
  }
};

}  // namespace corockpt::detail
