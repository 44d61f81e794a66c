// The turn queue the nccl communicator enqueues through: one holder at a time, in the
// order the places were taken, and a waiter that gives up never blocks the ones behind.
#include "corockpt/plugins/comm/detail/turn_queue.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <vector>

#include "corockpt/runtime/deadline.hpp"
#include "tests/support/run_sync.hpp"

using namespace corockpt;
using namespace std::chrono_literals;
using comm_detail::TurnGuard;
using comm_detail::TurnQueue;
using Ticket = TurnQueue::Ticket;

namespace {

/// Waits for `ticket`'s turn, notes `who` in `order`, gives the turn on.
Task<void> take_turn(TurnQueue& queue, std::shared_ptr<Ticket> ticket, int who, std::vector<int>& order,
                     std::mutex& mutex) {
  TurnGuard guard(queue, ticket);
  Result<void> turn = co_await queue.wait_turn(ticket);
  if (!turn) co_return turn;
  std::lock_guard lock(mutex);
  order.push_back(who);
  co_return Result<void>{};
}

}  // namespace

TEST_CASE("turn queue - the first place holds the turn at once, the others wait for it in the order taken") {
  Runtime rt;
  TurnQueue queue;
  auto first = queue.enter();
  REQUIRE(test::run_sync(rt, queue.wait_turn(first)));

  std::vector<std::shared_ptr<Ticket>> tickets;
  for (int i = 0; i < 4; ++i) tickets.push_back(queue.enter());
  std::vector<int> order;
  std::mutex mutex;
  std::vector<TaskHandle<void>> waiters;
  for (int i = 3; i >= 0; --i) {  // the waits start in the reverse order
    waiters.push_back(rt.spawn(take_turn(queue, tickets[static_cast<std::size_t>(i)], i, order, mutex)));
  }
  test::run_sync(rt, [&]() -> Task<void> { co_return Result<void>{}; }()).value();
  {
    std::lock_guard lock(mutex);
    CHECK(order.empty());  // the first place still holds the turn
  }
  queue.leave(*first);
  for (auto& waiter : waiters) REQUIRE(waiter.get());
  CHECK(order == std::vector<int>{0, 1, 2, 3});

  // Everyone left: the next place holds the turn at once.
  auto later = queue.enter();
  CHECK(test::run_sync(rt, with_deadline(queue.wait_turn(later), 10s, "wait_turn")));
  queue.leave(*later);
}

TEST_CASE("turn queue - a place given up before its turn is skipped") {
  Runtime rt;
  TurnQueue queue;
  auto first = queue.enter();
  auto gives_up = queue.enter();
  auto next = queue.enter();
  { TurnGuard guard(queue, gives_up); }  // its user stopped before its turn came
  queue.leave(*first);
  auto turn = test::run_sync(rt, with_deadline(queue.wait_turn(next), 10s, "wait_turn"));
  CHECK(turn);
  queue.leave(*next);
}

TEST_CASE("turn queue - a waiter stopped at its deadline passes the turn on") {
  Runtime rt;
  TurnQueue queue;
  auto first = queue.enter();
  auto late = queue.enter();
  auto next = queue.enter();
  std::vector<int> order;
  std::mutex mutex;
  auto stopped = test::run_sync(rt, with_deadline(take_turn(queue, late, 1, order, mutex), 20ms, "wait_turn"));
  REQUIRE_FALSE(stopped);
  CHECK(stopped.error().code == Errc::timeout);
  queue.leave(*first);
  CHECK(test::run_sync(rt, with_deadline(take_turn(queue, next, 2, order, mutex), 10s, "wait_turn")));
  CHECK(order == std::vector<int>{2});
}

TEST_CASE("turn queue - a turn that comes just as its waiter gives up is passed on by the waiter's guard") {
  Runtime rt;
  TurnQueue queue;
  auto first = queue.enter();
  auto gone = queue.enter();
  auto next = queue.enter();
  // Its wait was cancelled (a deadline), but its guard has not left yet ...
  gone->granted_signal->complete(fail(Errc::cancelled, "wait cancelled"));
  // ... when the turn comes to it: the signal refuses the grant.
  queue.leave(*first);
  { TurnGuard guard(queue, gone); }  // the guard, on its way out, gives the turn on
  CHECK(test::run_sync(rt, with_deadline(queue.wait_turn(next), 10s, "wait_turn")));
  queue.leave(*next);
}
