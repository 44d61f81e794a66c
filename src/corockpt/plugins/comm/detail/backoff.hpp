#pragma once
/// @file
/// Polling with back-off, for communicators whose library offers nothing to wait on (MPI
/// requests, NCCL's non-blocking calls, CUDA events): a poll, then a sleep on a timer of
/// the polling coroutine's executor, 20 µs at first, doubling while nothing happens, at
/// most 2 ms. No thread blocks and nothing spins on a core; a result is seen at most
/// 2 ms late.

#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>

#include "corockpt/runtime/task.hpp"

namespace corockpt::comm_detail {

/// The pauses between polls.
class Backoff {
 public:
  static constexpr std::chrono::microseconds shortest{20};
  static constexpr std::chrono::microseconds longest{2000};

  /// The pause before the next poll; the one after it is twice as long, up to `longest`.
  std::chrono::microseconds next() {
    const auto pause = pause_;
    pause_ = std::min(pause_ * 2, longest);
    return pause;
  }
  /// Something happened: the next pause is the shortest again.
  void reset() { pause_ = shortest; }

 private:
  std::chrono::microseconds pause_ = shortest;
};

/// Calls `check` until it returns an outcome (a `std::optional<Result<void>>`: empty while
/// the awaited thing is still in progress) and returns that outcome. Cancellable (that is
/// how `with_deadline` stops it): @returns Errc::cancelled then.
template <class Check>
Task<void> poll_with_backoff(Check check) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  Backoff backoff;
  for (;;) {
    std::optional<Result<void>> outcome = check();
    if (outcome) co_return std::move(*outcome);
    timer.expires_after(backoff.next());
    auto [ec] = co_await timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) co_return fail(Errc::cancelled, "cancelled while polling");
  }
}

}  // namespace corockpt::comm_detail
