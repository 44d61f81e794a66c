#include "corockpt/runtime/deadline.hpp"

#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <catch2/catch.hpp>
#include <chrono>

#include "corockpt/runtime/completion.hpp"
#include "tests/support/run_sync.hpp"

using namespace corockpt;
using namespace std::chrono_literals;

namespace {

// `cancelled`, when given, is completed once the sleep sees its cancellation.
Task<int> sleep_then(std::chrono::milliseconds d, int value, std::shared_ptr<Completion<void>> cancelled = nullptr) {
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  auto [ec] = co_await timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
  if (ec) {
    if (cancelled) cancelled->complete(Result<void>{});
    co_return fail(Errc::cancelled, "sleep cancelled");
  }
  co_return value;
}

}  // namespace

TEST_CASE("deadline - a task that ends in time gives its own result") {
  Runtime rt;
  auto r = test::run_sync(rt, with_deadline(sleep_then(1ms, 5), 10s, "quick"));
  REQUIRE(r);
  CHECK(*r == 5);
}

TEST_CASE("deadline - a missed deadline is a timeout error, and the task is cancelled") {
  Runtime rt;
  auto cancelled = Completion<void>::make();
  auto r = test::run_sync(rt, with_deadline(sleep_then(1h, 5, cancelled), 50ms, "all_gather"));
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::timeout);
  CHECK(r.error().context.operation == "all_gather");
  // The cancellation reaches the task on the io thread after the timeout: wait for that
  // event (a task never cancelled fails by CTest's timeout) rather than for a while.
  auto seen = test::run_sync(
      rt, [](std::shared_ptr<Completion<void>> c) -> Task<void> { co_return co_await c->wait(); }(cancelled));
  CHECK(seen.has_value());
}

TEST_CASE("deadline - an error before the deadline is passed through") {
  Runtime rt;
  auto r = test::run_sync(rt, with_deadline([]() -> Task<int> { co_return fail(Errc::io, "disk"); }(), 10s));
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::io);
}
