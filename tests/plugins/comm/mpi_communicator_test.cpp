// The mpi communicator on 4 processes: CTest runs this program under
// `mpirun -np 4`, and every process runs every test case, in the same order, each on
// its own runtime and its own duplicate of MPI_COMM_WORLD.
#include "corockpt/plugins/comm/mpi/mpi_communicator.hpp"

#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "corockpt/plugins/comm/mpi/peer_processes.hpp"
#include "corockpt/runtime/trace.hpp"
#include "tests/plugins/comm/rank_checks.hpp"
#include "tests/support/catch_session.hpp"

using namespace corockpt;
using namespace corockpt::test;
using namespace std::chrono_literals;

namespace {

constexpr int processes = 4;

// Long enough for a loaded 2-core machine; short enough that a test gone wrong on one
// process fails the others instead of stalling them.
constexpr auto normal_deadline = 60s;

std::shared_ptr<Communicator> make_world(Runtime& rt, CommOptions options = {.deadline = normal_deadline}) {
  auto world = make_mpi_world(rt, options);
  INFO((world ? std::string() : world.error().to_string()));
  REQUIRE(world);
  REQUIRE((*world)->size() == processes);
  return *world;
}

// Runs this process's part on a strand of the runtime and waits for it.
Result<void> run_here(Runtime& rt, Task<void> body) { return rt.spawn(rt.make_strand(), std::move(body)).get(); }

void check_ok(const Result<void>& result) {
  INFO((result ? std::string("ok") : result.error().to_string()));
  CHECK(result);
}

// `hasty` splits into one group of all ranks, where the last rank skips a barrier; then
// everyone meets on `patient`, another communicator, which is unaffected.
Task<void> skip_barrier_on_split(std::shared_ptr<Communicator> hasty, std::shared_ptr<Communicator> patient,
                                 std::vector<Result<void>>* outcomes) {
  auto group = co_await hasty->split(0, hasty->rank());
  if (!group) co_return fail(group.error());
  outcomes->push_back(co_await barrier_unless(*group, hasty->size() - 1));
  outcomes->push_back(co_await barrier_unless(*group, hasty->size() - 1));  // broken by now, except on the last
  co_return co_await patient->barrier();
}

// The last rank enters a barrier at once and gives up at its deadline; the others enter
// it only after `delay`, completing the barrier the last rank abandoned.
Task<void> last_rank_gives_up(std::shared_ptr<Communicator> hasty, std::chrono::milliseconds delay) {
  if (hasty->rank() != hasty->size() - 1) (void)co_await sleep_for(delay);
  co_return co_await hasty->barrier();
}

// Enough traffic on `comm` for the poller to test the abandoned request many times.
Task<void> some_traffic(std::shared_ptr<Communicator> comm) {
  for (int i = 0; i < 20; ++i) {
    auto done = co_await all_gather_rank(comm, 64);
    if (!done) co_return done;
  }
  co_return co_await comm->barrier();
}

}  // namespace

TEST_CASE("comm mpi - the world is every process, on its own communicator", "[comm]") {
  Runtime rt;
  auto world = make_world(rt);
  CHECK(world->backend() == "mpi");
  CHECK(world->name() == "world");
  CHECK(world->rank() >= 0);
  CHECK(world->rank() < processes);
}

TEST_CASE("comm mpi - all_gather", "[comm]") {
  Runtime rt;
  auto world = make_world(rt);
  auto each = GENERATE(std::size_t{16}, std::size_t{0}, std::size_t{1} << 20);
  CAPTURE(each);
  check_ok(run_here(rt, all_gather_rank(world, each)));
}

TEST_CASE("comm mpi - all_gather_v with uneven and zero counts", "[comm]") {
  Runtime rt;
  auto world = make_world(rt);
  check_ok(run_here(rt, all_gather_v_rank(world)));
}

TEST_CASE("comm mpi - gather_v to a non-zero root", "[comm]") {
  Runtime rt;
  auto world = make_world(rt);
  check_ok(run_here(rt, gather_v_rank(world, 2)));
}

TEST_CASE("comm mpi - broadcast from a non-zero root", "[comm]") {
  Runtime rt;
  auto world = make_world(rt);
  check_ok(run_here(rt, broadcast_rank(world, 1)));
}

TEST_CASE("comm mpi - barrier", "[comm]") {
  Runtime rt;
  auto world = make_world(rt);
  check_ok(run_here(rt, barrier_only(world)));
}

TEST_CASE("comm mpi - send and recv around a ring, matched by tag in issue order", "[comm]") {
  Runtime rt;
  auto world = make_world(rt);
  check_ok(run_here(rt, ring_rank(world)));
}

TEST_CASE("comm mpi - exchange: all-to-all with uneven and empty messages", "[comm]") {
  Runtime rt;
  auto world = make_world(rt);
  check_ok(run_here(rt, exchange_rank(world)));
}

TEST_CASE("comm mpi - split into a 2x2 mesh, then collectives on both groups at once", "[comm]") {
  Runtime rt;
  auto world = make_world(rt);
  check_ok(run_here(rt, mesh_rank(world)));
}

TEST_CASE("comm mpi - a recv of the wrong size fails and breaks that communicator", "[comm]") {
  Runtime rt;
  auto world = make_world(rt);
  auto result = run_here(rt, mismatched_transfer(world));
  if (world->rank() == 1) {
    REQUIRE_FALSE(result);
    CHECK(result.error().code == Errc::invalid_argument);
    CHECK_THAT(result.error().message, Catch::Contains("recv on world from rank 0"));
    auto later = run_here(rt, barrier_only(world));
    REQUIRE_FALSE(later);
    CHECK(later.error().code == Errc::unavailable);
  } else {
    check_ok(result);
  }
}

TEST_CASE("comm mpi - a rank that skips a barrier: the others time out, then the group is broken", "[comm]") {
  Runtime rt;
  auto patient = make_world(rt);
  auto hasty = make_world(rt, {.deadline = 300ms});
  std::vector<Result<void>> outcomes;
  const auto start = std::chrono::steady_clock::now();
  check_ok(run_here(rt, skip_barrier_on_split(hasty, patient, &outcomes)));
  REQUIRE(outcomes.size() == 2);
  if (hasty->rank() == processes - 1) {
    CHECK(outcomes[0]);
    CHECK(outcomes[1]);
    return;
  }
  CHECK(std::chrono::steady_clock::now() - start >= 300ms);
  REQUIRE_FALSE(outcomes[0]);
  const Error& timed_out = outcomes[0].error();
  INFO(timed_out.to_string());
  CHECK(timed_out.code == Errc::timeout);
  CHECK(timed_out.context.operation == "barrier");
  CHECK_THAT(timed_out.message, Catch::Contains("barrier on world/split(0) did not finish within 300 ms"));
  // Nobody died (the last rank only skipped the barrier): the message blames no one.
  CHECK_THAT(timed_out.message, Catch::Contains("the 3 other ranks on this host are running"));
  REQUIRE_FALSE(outcomes[1]);
  CHECK(outcomes[1].error().code == Errc::unavailable);
  CHECK_THAT(outcomes[1].error().message,
             Catch::Contains("communicator world/split(0) is broken after an earlier timeout"));
}

TEST_CASE("comm mpi - after a timeout, a dead peer on this host is named; peers elsewhere are counted", "[comm]") {
  const ProcessId me = this_process_id();
  const pid_t child = ::fork();  // a process that has exited (and been reaped): its pid is free
  if (child == 0) ::_exit(0);
  REQUIRE(child > 0);
  REQUIRE(::waitpid(child, nullptr, 0) == child);
  const std::vector<ProcessId> world = {me, {.host = me.host, .pid = child}, {.host = me.host + 1, .pid = 1}, me};
  const std::vector<int> everyone = {0, 1, 2, 3};
  CHECK(mpi_detail::describe_peers(world, everyone, 0) ==
        "world rank 1 (pid " + std::to_string(child) + ", this host) has exited; 1 ranks on other hosts were not checked");
  const std::vector<int> alive = {0, 3};
  CHECK(mpi_detail::describe_peers(world, alive, 0) == "the other rank on this host is running");
  CHECK(this_process_id().host == me.host);
}

TEST_CASE("comm mpi - a collective abandoned at its deadline completes later, its communicator gone", "[comm]") {
  Runtime rt;
  auto patient = make_world(rt);
  {
    auto hasty = make_world(rt, {.deadline = 300ms});
    auto result = run_here(rt, last_rank_gives_up(hasty, 600ms));
    if (hasty->rank() == processes - 1) {
      REQUIRE_FALSE(result);
      CHECK(result.error().code == Errc::timeout);
    } else {
      check_ok(result);
    }
  }  // `hasty` is destroyed here, with the last rank's barrier still pending in MPI
  // MPI completes that barrier while the poller serves this traffic; the communicator
  // must outlive it (OpenMPI crashes progressing a collective on a freed communicator).
  check_ok(run_here(rt, some_traffic(patient)));
}

TEST_CASE("comm mpi - arguments this rank gets wrong fail here and break the communicator", "[comm]") {
  Runtime rt;
  auto world = make_world(rt);
  auto result = run_here(rt, broadcast_rank(world, processes));  // no such root
  REQUIRE_FALSE(result);
  CHECK(result.error().code == Errc::invalid_argument);
  auto later = run_here(rt, barrier_only(world));
  REQUIRE_FALSE(later);
  CHECK(later.error().code == Errc::unavailable);
}

TEST_CASE("comm mpi - injected latency delays every operation, and groups overlap under it", "[comm]") {
  Runtime rt;
  rt.tracer().enable();
  constexpr auto latency = 100ms;
  auto world = make_world(rt, {.deadline = normal_deadline, .injected_latency = latency});
  check_ok(run_here(rt, mesh_rank(world)));
  std::vector<SpanRecord> gathers;
  for (auto& s : rt.tracer().spans()) {
    if (s.name.starts_with("all_gather")) gathers.push_back(s);
  }
  REQUIRE(gathers.size() == 2);
  const auto latency_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(latency).count();
  for (auto& g : gathers) CHECK(g.duration_ns >= latency_ns);
  CHECK(gathers[0].start_ns < gathers[1].start_ns + gathers[1].duration_ns);
  CHECK(gathers[1].start_ns < gathers[0].start_ns + gathers[0].duration_ns);
}

int main(int argc, char* argv[]) {
  const int failed = corockpt::test::run_catch(argc, argv);
  // The deadline test leaves an abandoned barrier behind: finalizing must still work.
  if (auto finalized = finalize_mpi(); !finalized) {
    std::fprintf(stderr, "finalize_mpi: %s\n", finalized.error().to_string().c_str());
    return 1;
  }
  return failed == 0 ? 0 : 1;
}
