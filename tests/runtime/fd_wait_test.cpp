#include "corockpt/runtime/fd_wait.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <thread>

#include "tests/support/run_sync.hpp"

using namespace corockpt;
using namespace std::chrono_literals;

TEST_CASE("fd_wait - an eventfd written by another thread wakes the waiting task") {
  Runtime rt;
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  REQUIRE(fd >= 0);
  auto waiting = rt.spawn(wait_readable(fd));
  CHECK_FALSE(waiting.wait_for(30ms));
  ssize_t written = 0;  // asserted here, on the test's thread, after the join
  std::thread writer([fd, &written] {
    std::uint64_t one = 1;
    written = ::write(fd, &one, sizeof one);
  });
  writer.join();
  CHECK(written == sizeof(std::uint64_t));
  CHECK(waiting.get().has_value());
  ::close(fd);
}

TEST_CASE("fd_wait - a wait can be cancelled and leaves the descriptor open") {
  Runtime rt;
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  auto waiting = rt.spawn(wait_readable(fd));
  REQUIRE_FALSE(waiting.wait_for(20ms));
  waiting.cancel();
  auto r = waiting.get();
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::cancelled);
  std::uint64_t one = 1;
  CHECK(::write(fd, &one, sizeof one) == sizeof one);  // still ours
  ::close(fd);
}
