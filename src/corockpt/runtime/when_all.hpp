#pragma once
/// @file
/// `when_all(tasks)`: runs N tasks concurrently on the awaiting coroutine's executor
/// and collects every result, in order.
///
/// Policy: every task runs to its end and every failure is reported, because our tasks
/// own I/O in flight (buffers the kernel or a device still writes) that must not be
/// abandoned half-way. Use `all_ok` to turn the results into the first error. Cancelling
/// the awaiting coroutine cancels every task still running, and still waits for them.

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/this_coro.hpp>

#include <memory>
#include <optional>
#include <vector>

#include "corockpt/runtime/completion.hpp"
#include "corockpt/runtime/task.hpp"

namespace corockpt {

template <class T>
asio::awaitable<std::vector<Result<T>>> when_all(std::vector<Task<T>> tasks) {
  const std::size_t n = tasks.size();
  std::vector<Result<T>> out;
  if (n == 0) co_return out;

  auto executor = co_await asio::this_coro::executor;
  struct Shared {
    std::vector<std::optional<Result<T>>> results;
    std::vector<asio::cancellation_signal> signals;
    std::vector<bool> finished;  // touched on `executor` only
    std::size_t remaining;
    std::shared_ptr<Completion<void>> all_done = Completion<void>::make();
    asio::cancellation_signal never;  // the wait below must not be cut short
  };
  auto shared = std::make_shared<Shared>();
  shared->results.resize(n);
  shared->signals = std::vector<asio::cancellation_signal>(n);
  shared->finished.assign(n, false);
  shared->remaining = n;

  for (std::size_t i = 0; i < n; ++i) {
    asio::co_spawn(executor,
                   detail::run_into(std::move(tasks[i]),
                                    [shared, i](Result<T> r) {
                                      shared->results[i].emplace(std::move(r));
                                      shared->finished[i] = true;
                                      if (--shared->remaining == 0) shared->all_done->complete({});
                                    }),
                   asio::bind_cancellation_slot(shared->signals[i].slot(), asio::detached));
  }

  // Forward our own cancellation to the tasks still running.
  asio::cancellation_state state = co_await asio::this_coro::cancellation_state;
  if (state.slot().is_connected()) {
    state.slot().assign([weak = std::weak_ptr<Shared>(shared)](asio::cancellation_type type) {
      if (auto s = weak.lock()) {
        for (std::size_t i = 0; i < s->signals.size(); ++i) {
          if (!s->finished[i]) s->signals[i].emit(type);
        }
      }
    });
  }
  (void)co_await shared->all_done->async_wait(asio::bind_cancellation_slot(shared->never.slot(), asio::use_awaitable));
  if (state.slot().is_connected()) state.slot().clear();

  out.reserve(n);
  for (auto& r : shared->results) out.push_back(std::move(*r));
  co_return out;
}

/// The values of `results` if all succeeded, else the first error.
template <class T>
Result<std::vector<T>> all_ok(std::vector<Result<T>> results) {
  std::vector<T> values;
  values.reserve(results.size());
  for (auto& r : results) {
    if (!r) return fail(std::move(r.error()));
    values.push_back(std::move(*r));
  }
  return values;
}

/// Success if all succeeded, else the first error.
inline Result<void> all_ok(const std::vector<Result<void>>& results) {
  for (const auto& r : results) {
    if (!r) return fail(r.error());
  }
  return {};
}

}  // namespace corockpt
