// Polling with back-off (the nccl communicator's enqueues and events, the MPI progress
// poller): the pauses, the outcome passed through, and no spinning while nothing happens.
#include "corockpt/plugins/comm/detail/backoff.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <optional>
#include <vector>

#include "corockpt/runtime/deadline.hpp"
#include "tests/support/run_sync.hpp"

using namespace corockpt;
using namespace std::chrono_literals;
using comm_detail::Backoff;
using comm_detail::poll_with_backoff;

TEST_CASE("backoff - pauses start at 20 us, double while nothing happens, stay at 2 ms, and restart after progress") {
  Backoff backoff;
  std::vector<long> pauses;
  for (int i = 0; i < 9; ++i) pauses.push_back(static_cast<long>(backoff.next().count()));
  CHECK(pauses == std::vector<long>{20, 40, 80, 160, 320, 640, 1280, 2000, 2000});
  backoff.reset();
  CHECK(backoff.next() == 20us);
  CHECK(backoff.next() == 40us);
}

TEST_CASE("backoff - polling returns the check's outcome, success or error") {
  Runtime rt;
  int calls = 0;
  auto ready_on_fourth = [&calls]() -> std::optional<Result<void>> {
    if (++calls < 4) return std::nullopt;
    return Result<void>{};
  };
  CHECK(test::run_sync(rt, poll_with_backoff(ready_on_fourth)));
  CHECK(calls == 4);

  auto failing = []() -> std::optional<Result<void>> { return fail(Errc::io, "the peer failed"); };
  auto failed = test::run_sync(rt, poll_with_backoff(failing));
  REQUIRE_FALSE(failed);
  CHECK(failed.error().code == Errc::io);
  CHECK(failed.error().message == "the peer failed");
}

TEST_CASE("backoff - a poll that never finishes is stopped by its deadline, having polled at most once per pause") {
  Runtime rt;
  int calls = 0;
  auto never = [&calls]() -> std::optional<Result<void>> {
    ++calls;
    return std::nullopt;
  };
  const auto start = std::chrono::steady_clock::now();
  auto stopped = test::run_sync(rt, with_deadline(poll_with_backoff(never), 100ms, "poll"));
  const auto elapsed_us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
  REQUIRE_FALSE(stopped);
  CHECK(stopped.error().code == Errc::timeout);
  // Every call but the first follows a pause of at least the back-off's: the 7 growing
  // pauses (2540 us in all), then 2 ms each. A spinning poll would call thousands of times.
  const long bound = 8 + (elapsed_us.count() > 2540 ? (elapsed_us.count() - 2540) / 2000 : 0) + 1;
  CHECK(calls >= 2);
  CHECK(calls <= bound);
}
