#include "corockpt/runtime/runtime.hpp"

#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <stdexcept>

#include "corockpt/runtime/completion.hpp"
#include "corockpt/runtime/when_all.hpp"
#include "tests/support/run_sync.hpp"

using namespace corockpt;
using namespace std::chrono_literals;

namespace {

Task<int> sleep_then(std::chrono::milliseconds d, int value) {
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  co_await timer.async_wait(asio::use_awaitable);
  co_return value;
}

}  // namespace

TEST_CASE("runtime - 10,000 concurrent tasks complete") {
  Runtime rt;
  constexpr int n = 10'000;
  auto result = test::run_sync(rt, []() -> Task<long> {
    std::vector<Task<int>> tasks;
    for (int i = 0; i < n; ++i) tasks.push_back(sleep_then(std::chrono::milliseconds(i % 20), i));
    auto results = co_await when_all(std::move(tasks));
    auto values = all_ok(std::move(results));
    if (!values) co_return fail(values.error());
    long sum = 0;
    for (int v : *values) sum += v;
    co_return sum;
  }());
  REQUIRE(result);
  CHECK(*result == long{n} * (n - 1) / 2);
}

TEST_CASE("runtime - a spawned task can be polled, then waited on") {
  Runtime rt;
  // The task waits for an event this thread delivers, not for a timer: not ready before.
  auto event = Completion<int>::make();
  auto handle = rt.spawn([](std::shared_ptr<Completion<int>> e) -> Task<int> { co_return co_await e->wait(); }(event));
  CHECK_FALSE(handle.ready());
  REQUIRE(event->complete(7));
  CHECK(handle.wait_for(1min));  // a guard against a hang, not a timing claim
  CHECK(handle.ready());
  auto r = handle.get();
  REQUIRE(r);
  CHECK(*r == 7);
}

TEST_CASE("runtime - cancellation stops a sleeping task") {
  Runtime rt;
  auto handle = rt.spawn(sleep_then(1h, 1));
  handle.cancel();
  auto r = handle.get();  // an hour's sleep that ignored the cancel would fail by CTest's timeout
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::cancelled);
}

TEST_CASE("runtime - waiting synchronously on the runtime's own thread is refused, not a deadlock") {
  Runtime rt;
  auto r = test::run_sync(rt, [](Runtime& rt) -> Task<int> {
    auto inner = rt.spawn(sleep_then(1ms, 1));
    auto got = inner.get();  // on the io thread
    if (got) co_return fail(Errc::internal, "get() on the io thread should have been refused");
    co_return got.error().code == Errc::invalid_argument ? 1 : 0;
  }(rt));
  REQUIRE(r);
  CHECK(*r == 1);
}

TEST_CASE("runtime - offload runs blocking work on the pool and resumes on the io thread") {
  Runtime rt({.worker_threads = 2});
  auto r = test::run_sync(rt, [](Runtime& rt) -> Task<bool> {
    bool ran_on_pool = false;
    auto v = co_await rt.offload([&] {
      ran_on_pool = !rt.on_io_thread();
      return 41 + 1;
    });
    if (!v || *v != 42) co_return fail(Errc::internal, "offload lost the value");
    co_return ran_on_pool && rt.on_io_thread();
  }(rt));
  REQUIRE(r);
  CHECK(*r);
}

TEST_CASE("runtime - an exception in offloaded work or a task becomes an Error") {
  Runtime rt;
  auto r = test::run_sync(rt, [](Runtime& rt) -> Task<int> {
    co_return co_await rt.offload([]() -> int { throw std::runtime_error("boom"); });
  }(rt));
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::internal);
  CHECK(r.error().message == "boom");

  auto t = test::run_sync(rt, []() -> Task<int> {
    throw std::runtime_error("thrown in a task");
    co_return 0;
  }());
  REQUIRE_FALSE(t);
  CHECK(t.error().message == "thrown in a task");
}

TEST_CASE("runtime - ranks on their own strands share the one io thread") {
  Runtime rt;
  std::vector<TaskHandle<bool>> handles;
  for (int rank = 0; rank < 8; ++rank) {
    handles.push_back(rt.spawn(rt.make_strand(), [](Runtime& rt) -> Task<bool> {
      co_await sleep_then(5ms, 0);
      co_return rt.on_io_thread();
    }(rt)));
  }
  for (auto& h : handles) {
    auto r = h.get();
    REQUIRE(r);
    CHECK(*r);
  }
}

TEST_CASE("runtime - destroying the runtime with tasks still suspended is clean") {
  auto rt = std::make_unique<Runtime>();
  rt->tracer().enable();
  auto handle = rt->spawn([](Runtime& r) -> Task<int> {
    ScopedSpan span(r.tracer(), "sleeping", "test");
    co_return co_await sleep_then(1h, 1);
  }(*rt));
  REQUIRE_FALSE(handle.wait_for(10ms));
  rt.reset();  // the suspended frame (and its span) is destroyed with the io_context
  CHECK_FALSE(handle.ready());
}
