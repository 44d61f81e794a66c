#include "corockpt/runtime/when_all.hpp"

#include <asio/steady_timer.hpp>
#include <catch2/catch.hpp>
#include <chrono>

#include "tests/support/run_sync.hpp"

using namespace corockpt;
using namespace std::chrono_literals;

namespace {

Task<int> succeed_after(std::chrono::milliseconds d, int value) {
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  co_await timer.async_wait(asio::use_awaitable);
  co_return value;
}

Task<int> fail_after(std::chrono::milliseconds d, std::string why) {
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  co_await timer.async_wait(asio::use_awaitable);
  co_return fail(Errc::io, why);
}

}  // namespace

TEST_CASE("when_all - mixed successes and failures are all reported, in order") {
  Runtime rt;
  auto r = test::run_sync(rt, []() -> Task<std::vector<Result<int>>> {
    std::vector<Task<int>> tasks;
    tasks.push_back(succeed_after(30ms, 1));
    tasks.push_back(fail_after(5ms, "second"));
    tasks.push_back(succeed_after(1ms, 3));
    tasks.push_back(fail_after(20ms, "fourth"));
    co_return co_await when_all(std::move(tasks));
  }());
  REQUIRE(r);
  auto& results = *r;
  REQUIRE(results.size() == 4);
  CHECK(results[0].value() == 1);
  CHECK(results[1].error().message == "second");
  CHECK(results[2].value() == 3);
  CHECK(results[3].error().message == "fourth");

  auto first = all_ok(std::move(results));
  REQUIRE_FALSE(first);
  CHECK(first.error().message == "second");  // the first by position, not by time
}

TEST_CASE("when_all - no tasks is an immediate empty result") {
  Runtime rt;
  auto r = test::run_sync(rt, []() -> Task<std::size_t> {
    auto results = co_await when_all(std::vector<Task<int>>{});
    co_return results.size();
  }());
  REQUIRE(r);
  CHECK(*r == 0);
}

TEST_CASE("when_all - cancelling the waiter cancels every task and still collects them") {
  Runtime rt;
  auto handle = rt.spawn([]() -> Task<std::vector<Result<int>>> {
    std::vector<Task<int>> tasks;
    tasks.push_back(succeed_after(1h, 1));
    tasks.push_back(succeed_after(1h, 2));
    co_return co_await when_all(std::move(tasks));
  }());
  REQUIRE_FALSE(handle.wait_for(20ms));
  handle.cancel();
  auto r = handle.get();
  REQUIRE(r);
  REQUIRE(r->size() == 2);
  for (auto& each : *r) {
    REQUIRE_FALSE(each);
    CHECK(each.error().code == Errc::cancelled);
  }
}
