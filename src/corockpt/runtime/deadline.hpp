#pragma once
/// @file
/// `with_deadline(task, limit)`: a deadline on any await. A missed deadline is
/// `Errc::timeout`, never a hang.

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>

#include <chrono>
#include <memory>
#include <string>

#include "corockpt/runtime/completion.hpp"
#include "corockpt/runtime/task.hpp"

namespace corockpt {

/// Awaits `task`, giving up after `limit`.
/// @param what names the operation in the timeout's message and context.
/// @returns the task's result if it ends in time; otherwise Errc::timeout at the
///   deadline, after which the task is asked to stop (cancelled) and left to end on its
///   own: whatever it still uses must outlive it. Cancelling the await cancels the task.
/// @note Must be awaited from a coroutine on the io_context or a strand of it.
template <class T, class Rep, class Period>
Task<T> with_deadline(Task<T> task, std::chrono::duration<Rep, Period> limit, std::string what = "operation") {
  auto executor = co_await asio::this_coro::executor;
  struct Shared {
    std::shared_ptr<Completion<T>> done = Completion<T>::make();
    asio::cancellation_signal signal;
    bool task_finished = false;  // touched on `executor` only
  };
  auto shared = std::make_shared<Shared>();

  asio::co_spawn(executor,
                 detail::run_into(std::move(task),
                                  [shared](Result<T> r) {
                                    shared->task_finished = true;
                                    shared->done->complete(std::move(r));
                                  }),
                 asio::bind_cancellation_slot(shared->signal.slot(), asio::detached));

  asio::steady_timer timer(executor, limit);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(limit).count();
  timer.async_wait([shared, what, ms](std::error_code ec) {
    if (ec) return;  // the timer was cancelled: the task ended first
    shared->done->complete(fail(Errc::timeout, what + " did not finish within " + std::to_string(ms) + " ms",
                                ErrorContext{.operation = what}));
  });

  Result<T> result = co_await shared->done->wait();
  timer.cancel();
  if (!shared->task_finished) shared->signal.emit(asio::cancellation_type::terminal);
  co_return result;
}

}  // namespace corockpt
