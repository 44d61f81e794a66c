#pragma once
/// @file
/// The wait behind `CommOptions::injected_latency`, shared by the backends.

#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>

#include "corockpt/runtime/task.hpp"

namespace corockpt::comm_detail {

/// Waits `latency` on a timer of the awaiting coroutine's executor (nothing when 0).
/// @returns Errc::cancelled when the wait is cancelled.
inline Task<void> wait_injected_latency(std::chrono::milliseconds latency) {
  if (latency.count() <= 0) co_return Result<void>{};
  asio::steady_timer timer(co_await asio::this_coro::executor, latency);
  auto [ec] = co_await timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
  if (ec) co_return fail(Errc::cancelled, "cancelled during the injected latency");
  co_return Result<void>{};
}

}  // namespace corockpt::comm_detail
