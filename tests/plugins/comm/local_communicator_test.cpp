#include "corockpt/plugins/comm/local/local_communicator.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "corockpt/runtime/trace.hpp"
#include "corockpt/runtime/when_all.hpp"
#include "tests/plugins/comm/rank_checks.hpp"

using namespace corockpt;
using namespace corockpt::test;
using namespace std::chrono_literals;

namespace {

using World = std::vector<std::shared_ptr<Communicator>>;

World make_world(Runtime& rt, int size, CommOptions options = {}) {
  auto world = make_local_world(rt, size, options);
  REQUIRE(world);
  return std::move(*world);
}

// Runs `body(comm)` for every rank, each on its own strand, and returns every rank's result.
template <class Body>
std::vector<Result<void>> on_every_rank(Runtime& rt, const World& world, Body body) {
  std::vector<TaskHandle<void>> handles;
  for (const auto& comm : world) handles.push_back(rt.spawn(rt.make_strand(), body(comm)));
  std::vector<Result<void>> results;
  for (auto& handle : handles) results.push_back(handle.get());
  return results;
}

void check_all_ok(const std::vector<Result<void>>& results) {
  for (std::size_t r = 0; r < results.size(); ++r) {
    INFO("rank " << r << ": " << (results[r] ? std::string("ok") : results[r].error().to_string()));
    CHECK(results[r]);
  }
}

// Ranks arrive at different times; none may leave before the last has arrived.
Task<void> barrier_rank(std::shared_ptr<Communicator> comm, std::atomic<int>* arrived) {
  (void)co_await sleep_for(std::chrono::milliseconds(3 * comm->rank()));
  arrived->fetch_add(1);
  auto done = co_await comm->barrier();
  if (!done) co_return done;
  if (arrived->load() != comm->size()) co_return wrong(*comm, "left the barrier before everyone arrived");
  co_return Result<void>{};
}

// `late` joins only after `delay`, when the others have given up.
Task<void> all_gather_into(std::shared_ptr<Communicator> comm, std::span<std::byte> recv, int late,
                           std::chrono::milliseconds delay) {
  if (comm->rank() == late) (void)co_await sleep_for(delay);
  Bytes send = filled(comm->rank(), recv.size() / static_cast<std::size_t>(comm->size()));
  co_return co_await comm->all_gather(send, recv);
}

}  // namespace

TEST_CASE("comm local - a world needs at least one rank", "[comm]") {
  Runtime rt;
  auto world = make_local_world(rt, 0);
  REQUIRE_FALSE(world);
  CHECK(world.error().code == Errc::invalid_argument);
}

TEST_CASE("comm local - all_gather on 8 ranks gives every rank every rank's bytes in rank order", "[comm]") {
  Runtime rt;
  auto world = make_world(rt, 8);
  CHECK(world[5]->rank() == 5);
  CHECK(world[5]->size() == 8);
  CHECK(world[5]->name() == "world");
  CHECK(world[5]->backend() == "local");
  auto each = GENERATE(std::size_t{16}, std::size_t{0}, std::size_t{1} << 16);
  CAPTURE(each);
  check_all_ok(on_every_rank(rt, world, [each](auto comm) { return all_gather_rank(comm, each); }));
}

TEST_CASE("comm local - all_gather_v with uneven and zero counts", "[comm]") {
  Runtime rt;
  auto world = make_world(rt, 8);
  check_all_ok(on_every_rank(rt, world, [](auto comm) { return all_gather_v_rank(comm); }));
}

TEST_CASE("comm local - gather_v to a non-zero root", "[comm]") {
  Runtime rt;
  auto world = make_world(rt, 8);
  check_all_ok(on_every_rank(rt, world, [](auto comm) { return gather_v_rank(comm, 5); }));
}

TEST_CASE("comm local - broadcast from a non-zero root", "[comm]") {
  Runtime rt;
  auto world = make_world(rt, 8);
  check_all_ok(on_every_rank(rt, world, [](auto comm) { return broadcast_rank(comm, 3); }));
}

TEST_CASE("comm local - no rank leaves a barrier before every rank has entered it", "[comm]") {
  Runtime rt;
  auto world = make_world(rt, 8);
  std::atomic<int> arrived{0};
  check_all_ok(on_every_rank(rt, world, [&arrived](auto comm) { return barrier_rank(comm, &arrived); }));
}

TEST_CASE("comm local - send and recv around a ring, matched by tag in issue order", "[comm]") {
  Runtime rt;
  auto world = make_world(rt, 8);
  check_all_ok(on_every_rank(rt, world, [](auto comm) { return ring_rank(comm); }));
}

TEST_CASE("comm local - exchange: all-to-all with uneven and empty messages", "[comm]") {
  Runtime rt;
  auto world = make_world(rt, 6);
  check_all_ok(on_every_rank(rt, world, [](auto comm) { return exchange_rank(comm); }));
}

TEST_CASE("comm local - split into the 2x4 mesh groups, then collectives on both at once", "[comm]") {
  Runtime rt;
  rt.tracer().enable();
  auto world = make_world(rt, 8);
  check_all_ok(on_every_rank(rt, world, [](auto comm) { return mesh_rank(comm); }));
  // Every operation left a span, under its world rank.
  auto spans = rt.tracer().spans();
  auto count = [&](const std::string& name) {
    return std::count_if(spans.begin(), spans.end(), [&](const SpanRecord& s) { return s.name == name; });
  };
  CHECK(count("split on world") == 16);
  CHECK(count("all_gather on world/split(0)") == 2 + 4);  // dp {0, 4} and tp {0..3}
  CHECK(std::all_of(spans.begin(), spans.end(), [](const SpanRecord& s) { return s.rank >= 0 && s.rank < 8; }));
}

TEST_CASE("comm local - arguments that disagree fail the collective on every rank and the group goes on", "[comm]") {
  Runtime rt;
  auto world = make_world(rt, 8);
  // Rank 2 gives a receive buffer one byte short.
  auto results = on_every_rank(rt, world, [](auto comm) { return short_recv_on(comm, 2); });
  for (auto& r : results) {
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
    CHECK_THAT(r.error().message, Catch::Contains("rank 2") && Catch::Contains("all_gather on world"));
  }
  // Ranks that name different roots.
  results = on_every_rank(rt, world, [](auto comm) { return broadcast_rank(comm, comm->rank() == 6 ? 1 : 3); });
  for (auto& r : results) {
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
    CHECK_THAT(r.error().message, Catch::Contains("rank 6") && Catch::Contains("root"));
  }
  check_all_ok(on_every_rank(rt, world, [](auto comm) { return all_gather_rank(comm, 8); }));
}

TEST_CASE("comm local - a send and a recv of different sizes both fail", "[comm]") {
  Runtime rt;
  auto world = make_world(rt, 2);
  auto results = on_every_rank(rt, world, [](auto comm) { return mismatched_transfer(comm); });
  for (auto& r : results) {
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
  }
}

TEST_CASE("comm local - a rank that never arrives: the others time out, and the group is broken", "[comm]") {
  Runtime rt;
  auto world = make_world(rt, 8, {.deadline = 200ms});
  const auto start = std::chrono::steady_clock::now();
  auto results = on_every_rank(rt, world, [](auto comm) { return barrier_unless(comm, 3); });
  const auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK(elapsed >= 200ms);  // the deadline ended it (a hang fails by CTest's timeout, not by a clock here)
  for (int r = 0; r < 8; ++r) {
    if (r == 3) continue;
    REQUIRE_FALSE(results[static_cast<std::size_t>(r)]);
    const Error& e = results[static_cast<std::size_t>(r)].error();
    INFO(e.to_string());
    CHECK(e.code == Errc::timeout);
    CHECK(e.context.operation == "barrier");
    CHECK(e.context.rank == r);
    CHECK_THAT(e.message, Catch::Contains("barrier on world") && Catch::Contains("rank 3 of world did not arrive"));
  }
  // Broken on every rank, the absent one included, at once: rank 0 alone in a barrier
  // is told so (on a healthy group it would wait for the others and time out).
  auto alone = rt.spawn(rt.make_strand(), barrier_only(world[0])).get();
  REQUIRE_FALSE(alone);
  CHECK(alone.error().code == Errc::unavailable);
  results = on_every_rank(rt, world, [](auto comm) { return barrier_only(comm); });
  for (auto& r : results) {
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::unavailable);
    CHECK_THAT(r.error().message, Catch::Contains("communicator world is broken after an earlier timeout"));
  }
}

TEST_CASE("comm local - a late rank never copies into the buffers of ranks that gave up", "[comm]") {
  Runtime rt;
  auto world = make_world(rt, 8, {.deadline = 200ms});
  // The test owns the buffers, so they outlive the ranks' tasks and can be inspected.
  std::vector<Bytes> buffers(8, Bytes(8 * 16, std::byte{0xEE}));
  std::vector<TaskHandle<void>> handles;
  for (int r = 0; r < 8; ++r) {
    const auto i = static_cast<std::size_t>(r);
    handles.push_back(rt.spawn(rt.make_strand(), all_gather_into(world[i], buffers[i], 3, 400ms)));
  }
  for (int r = 0; r < 8; ++r) {
    auto result = handles[static_cast<std::size_t>(r)].get();
    REQUIRE_FALSE(result);
    CHECK(result.error().code == (r == 3 ? Errc::unavailable : Errc::timeout));
  }
  for (auto& buffer : buffers) {
    CHECK(std::all_of(buffer.begin(), buffer.end(), [](std::byte b) { return b == std::byte{0xEE}; }));
  }
}

TEST_CASE("comm local - an unmatched recv times out naming the missing send", "[comm]") {
  Runtime rt;
  auto world = make_world(rt, 2, {.deadline = 100ms});
  Bytes data(4);
  auto r = rt.spawn(rt.make_strand(), world[1]->recv(data, 0, 5)).get();
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::timeout);
  CHECK_THAT(r.error().message, Catch::Contains("recv on world from rank 0 (tag 5)") &&
                                    Catch::Contains("no matching send was posted"));
  auto later = rt.spawn(rt.make_strand(), world[0]->send(data, 1, 5)).get();
  REQUIRE_FALSE(later);
  CHECK(later.error().code == Errc::unavailable);
}

TEST_CASE("comm local - a timeout breaks only its own group", "[comm]") {
  Runtime rt;
  auto world = make_world(rt, 8, {.deadline = 200ms});
  std::vector<Mesh> meshes(8);
  {
    std::vector<TaskHandle<Mesh>> handles;
    for (auto& comm : world) handles.push_back(rt.spawn(rt.make_strand(), split_mesh(comm)));
    for (std::size_t r = 0; r < 8; ++r) meshes[r] = handles[r].get().value();
  }
  // In dp group {3, 7}, rank 7 stays away; every other dp group meets.
  World dp;
  for (auto& m : meshes) dp.push_back(m.dp);
  auto results = on_every_rank(rt, dp, [](auto comm) {
    return barrier_unless(comm, comm->name() == "world/split(3)" ? 1 : -1);  // world rank 7
  });
  for (int r = 0; r < 8; ++r) {
    auto& result = results[static_cast<std::size_t>(r)];
    INFO("rank " << r);
    if (r == 3) {
      REQUIRE_FALSE(result);
      CHECK(result.error().code == Errc::timeout);
      CHECK_THAT(result.error().message, Catch::Contains("barrier on world/split(3)") &&
                                             Catch::Contains("rank 1 (world rank 7) of world/split(3) did not arrive"));
    } else {
      CHECK(result);
    }
  }
  // The world and the tp groups are untouched.
  check_all_ok(on_every_rank(rt, world, [](auto comm) { return all_gather_rank(comm, 4); }));
  World tp;
  for (auto& m : meshes) tp.push_back(m.tp);
  check_all_ok(on_every_rank(rt, tp, [](auto comm) { return barrier_only(comm); }));
}

TEST_CASE("comm local - injected latency delays every operation, and groups overlap under it", "[comm]") {
  Runtime rt;
  rt.tracer().enable();
  constexpr auto latency = 100ms;
  auto world = make_world(rt, 8, {.deadline = 10s, .injected_latency = latency});
  check_all_ok(on_every_rank(rt, world, [](auto comm) { return mesh_rank(comm); }));
  // On each rank, the dp and tp gathers (issued together) each took at least the latency,
  // and each started before the other ended: they were in flight at the same time.
  auto spans = rt.tracer().spans();
  const auto latency_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(latency).count();
  for (int r = 0; r < 8; ++r) {
    std::vector<SpanRecord> gathers;
    for (auto& s : spans) {
      if (s.rank == r && s.name.starts_with("all_gather")) gathers.push_back(s);
    }
    REQUIRE(gathers.size() == 2);
    for (auto& g : gathers) CHECK(g.duration_ns >= latency_ns);
    CHECK(gathers[0].start_ns < gathers[1].start_ns + gathers[1].duration_ns);
    CHECK(gathers[1].start_ns < gathers[0].start_ns + gathers[0].duration_ns);
  }
}
