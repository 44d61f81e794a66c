// The nccl communicator on real GPUs, bootstrapped through the local backend (one
// process, one rank per GPU). Without a GPU (no driver, no device, or corockpt built
// without CUDA) the program prints why and exits 77, which CTest reports as skipped (tests/support/cuda_test_main.cpp). The
// cases that need two GPUs say so and pass on a machine with one.
#include "corockpt/plugins/comm/nccl/nccl_communicator.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>
#include <numeric>
#include <vector>

#include "corockpt/plugins/comm/local/local_communicator.hpp"
#include "corockpt/plugins/device/cuda/cuda_device.hpp"
#include "corockpt/runtime/when_all.hpp"
#include "tests/plugins/comm/rank_checks.hpp"

using namespace corockpt;
using namespace corockpt::test;
using namespace std::chrono_literals;

namespace {

std::string text(const Result<void>& r) { return r ? std::string("ok") : r.error().to_string(); }

int gpus() { return cuda_device_count().value_or(0); }

/// One rank: its NCCL communicator and its GPU (for moving test bytes in and out).
struct Rank {
  std::shared_ptr<Communicator> comm;
  std::shared_ptr<Device> device;
};

/// An NCCL world of `n` ranks on GPUs 0..n-1, made through a local world.
std::vector<Rank> make_world(Runtime& rt, int n, CommOptions options = {.deadline = 60s}) {
  auto bootstrap = make_local_world(rt, n, {.deadline = 60s});
  REQUIRE(bootstrap);
  std::vector<TaskHandle<std::shared_ptr<Communicator>>> making;
  for (int r = 0; r < n; ++r) {
    making.push_back(rt.spawn(rt.make_strand(), make_nccl_world(rt, (*bootstrap)[static_cast<std::size_t>(r)],
                                                                {.device = r, .comm = options})));
  }
  std::vector<Rank> ranks;
  for (int r = 0; r < n; ++r) {
    auto comm = making[static_cast<std::size_t>(r)].get();
    INFO((comm ? std::string("ok") : comm.error().to_string()));
    REQUIRE(comm);
    auto device = make_cuda_device(rt, {.device = r});
    REQUIRE(device);
    ranks.push_back({*comm, *device});
  }
  return ranks;
}

/// Device memory holding `bytes`.
Task<DeviceMemory> upload(Device& device, std::vector<std::byte> bytes) {
  auto memory = device.allocate(bytes.size());
  if (!memory) co_return fail(memory.error());
  auto copied = co_await device.copy_to_device(memory->bytes(), bytes);
  if (!copied) co_return fail(copied.error());
  co_return *memory;
}

Task<Bytes> download(Device& device, DeviceMemory memory) {
  Bytes out(memory.size());
  auto copied = co_await device.copy_to_host(out, memory.bytes());
  if (!copied) co_return fail(copied.error());
  co_return out;
}

/// Every collective on one rank, each checked against what the rank must end up with.
Task<void> every_collective(Rank rank) {
  Communicator& comm = *rank.comm;
  Device& device = *rank.device;
  const int me = comm.rank();
  const int n = comm.size();
  const auto ranks = static_cast<std::size_t>(n);
  constexpr std::size_t each = 1000;

  // all_gather
  {
    Bytes mine = filled(me, each);
    auto send = co_await upload(device, mine);
    if (!send) co_return fail(send.error());
    auto recv = device.allocate(each * ranks);
    if (!recv) co_return fail(recv.error());
    auto done = co_await comm.all_gather(send->bytes(), recv->bytes());
    if (!done) co_return done;
    auto got = co_await download(device, *recv);
    if (!got) co_return fail(got.error());
    for (int r = 0; r < n; ++r) {
      if (!holds_pattern(std::span(*got).subspan(static_cast<std::size_t>(r) * each, each), r)) {
        co_return wrong(comm, "all_gather: the part of rank " + std::to_string(r));
      }
    }
  }
  // all_gather_v and gather_v, with an empty part (rank 0's) and uneven others
  {
    std::vector<std::size_t> counts(ranks);
    for (std::size_t r = 0; r < ranks; ++r) counts[r] = r * 300;
    const std::size_t total = std::accumulate(counts.begin(), counts.end(), std::size_t{0});
    if (total == 0) counts[0] = 17;  // one rank: still move something
    const std::size_t sum = std::accumulate(counts.begin(), counts.end(), std::size_t{0});
    Bytes mine = filled(me, counts[static_cast<std::size_t>(me)]);
    auto send = co_await upload(device, mine);
    if (!send) co_return fail(send.error());
    auto recv = device.allocate(sum);
    if (!recv) co_return fail(recv.error());
    auto done = co_await comm.all_gather_v(send->bytes(), recv->bytes(), counts);
    if (!done) co_return done;
    auto got = co_await download(device, *recv);
    if (!got) co_return fail(got.error());
    std::size_t offset = 0;
    for (std::size_t r = 0; r < ranks; ++r) {
      if (!holds_pattern(std::span(*got).subspan(offset, counts[r]), static_cast<int>(r))) {
        co_return wrong(comm, "all_gather_v: the part of rank " + std::to_string(r));
      }
      offset += counts[r];
    }
    const int root = n - 1;
    auto gathered = device.allocate(sum);
    if (!gathered) co_return fail(gathered.error());
    done = co_await comm.gather_v(send->bytes(), gathered->bytes(), counts, root);
    if (!done) co_return done;
    if (me == root) {
      auto at_root = co_await download(device, *gathered);
      if (!at_root) co_return fail(at_root.error());
      if (*at_root != *got) co_return wrong(comm, "gather_v: the root's bytes differ from all_gather_v's");
    }
  }
  // broadcast from the last rank
  {
    const int root = n - 1;
    Bytes mine = filled(me, 4096);
    auto data = co_await upload(device, mine);
    if (!data) co_return fail(data.error());
    auto done = co_await comm.broadcast(data->bytes(), root);
    if (!done) co_return done;
    auto got = co_await download(device, *data);
    if (!got) co_return fail(got.error());
    if (!holds_pattern(*got, root)) co_return wrong(comm, "broadcast: not the root's bytes");
  }
  // exchange: all-to-all with uneven messages, some empty, in one NCCL group
  {
    std::vector<std::size_t> send_counts(ranks, 0), recv_counts(ranks, 0);
    Bytes mine;
    for (int p = 0; p < n; ++p) {
      if (p == me) continue;
      send_counts[p] = exchanged(me, p);
      recv_counts[p] = exchanged(p, me);
      Bytes part = filled(me * 16 + p, send_counts[p]);
      mine.insert(mine.end(), part.begin(), part.end());
    }
    auto out = co_await upload(device, mine);
    if (!out) co_return fail(out.error());
    auto in = device.allocate(total(recv_counts));
    if (!in) co_return fail(in.error());
    auto done = co_await comm.exchange(out->bytes(), send_counts, in->bytes(), recv_counts, 3);
    if (!done) co_return done;
    auto got = co_await download(device, *in);
    if (!got) co_return fail(got.error());
    std::size_t at = 0;
    for (int p = 0; p < n; ++p) {
      if (!holds_pattern(std::span(*got).subspan(at, recv_counts[p]), p * 16 + me)) {
        co_return wrong(comm, "exchange: the part from rank " + std::to_string(p));
      }
      at += recv_counts[p];
    }
  }
  // barrier, and a send/recv exchange between neighbours when there are two ranks or more
  auto met = co_await comm.barrier();
  if (!met) co_return met;
  if (n >= 2) {
    const int next = (me + 1) % n;
    const int previous = (me + n - 1) % n;
    Bytes mine = filled(me, 777);
    auto out = co_await upload(device, mine);
    if (!out) co_return fail(out.error());
    auto in = device.allocate(777);
    if (!in) co_return fail(in.error());
    // Both sides at once: a send may wait for its recv.
    std::vector<Task<void>> exchange;
    exchange.push_back(comm.send(out->bytes(), next, 5));
    exchange.push_back(comm.recv(in->bytes(), previous, 5));
    auto results = co_await when_all(std::move(exchange));
    if (auto ok = all_ok(results); !ok) co_return ok;
    auto got = co_await download(device, *in);
    if (!got) co_return fail(got.error());
    if (!holds_pattern(*got, previous)) co_return wrong(comm, "recv: not the previous rank's bytes");
  }
  co_return Result<void>{};
}

/// Runs `body(rank)` on every rank, each on its own strand, and checks every result.
template <class Body>
void on_every_rank(Runtime& rt, const std::vector<Rank>& ranks, Body body) {
  std::vector<TaskHandle<void>> running;
  for (const Rank& rank : ranks) running.push_back(rt.spawn(rt.make_strand(), body(rank)));
  for (auto& handle : running) {
    auto result = handle.get();
    INFO(text(result));
    CHECK(result);
  }
}

Task<void> split_and_use(Rank rank) {
  auto group = co_await rank.comm->split(rank.comm->rank() % 2, rank.comm->rank());
  if (!group) co_return fail(group.error());
  if ((*group)->backend() != "nccl") co_return wrong(*rank.comm, "split: not an nccl communicator");
  if ((*group)->name() != "world/split(" + std::to_string(rank.comm->rank() % 2) + ")") {
    co_return wrong(*rank.comm, "split: named " + (*group)->name());
  }
  Rank in_group{*group, rank.device};
  co_return co_await every_collective(in_group);
}

}  // namespace

TEST_CASE("comm nccl - a one-rank world runs every collective on device buffers", "[comm][cuda]") {
  Runtime rt;
  auto world = make_world(rt, 1);
  CHECK(world[0].comm->backend() == "nccl");
  CHECK(world[0].comm->name() == "world");
  CHECK(world[0].comm->rank() == 0);
  CHECK(world[0].comm->size() == 1);
  on_every_rank(rt, world, every_collective);
}

TEST_CASE("comm nccl - a split gives a working communicator per color", "[comm][cuda]") {
  Runtime rt;
  auto world = make_world(rt, std::min(gpus(), 4));
  on_every_rank(rt, world, split_and_use);
}

/// Host spans, and host and device spans mixed, on one rank: staged through the device.
Task<void> host_spans(Rank rank) {
  Communicator& comm = *rank.comm;
  Bytes sent = filled(0, 3000);
  Bytes got(3000);
  if (auto ok = co_await comm.all_gather(sent, got); !ok) co_return ok;
  if (got != sent) co_return fail(Errc::io, "all_gather of host memory moved the wrong bytes");
  Bytes data = sent;
  if (auto ok = co_await comm.broadcast(data, 0); !ok) co_return ok;
  if (data != sent) co_return fail(Errc::io, "broadcast of host memory changed the root's bytes");
  // Device send, host receive, twice in a row (the bounce buffers are reused).
  auto on_device = co_await upload(*rank.device, sent);
  if (!on_device) co_return fail(on_device.error());
  for (int round = 0; round < 2; ++round) {
    Bytes mixed(3000);
    const std::size_t counts[] = {3000};
    if (auto ok = co_await comm.all_gather_v(on_device->bytes(), mixed, counts); !ok) co_return ok;
    if (mixed != sent) co_return fail(Errc::io, "all_gather_v from device into host memory moved the wrong bytes");
  }
  co_return Result<void>{};
}

TEST_CASE("comm nccl - host memory is staged through the device", "[comm][cuda]") {
  Runtime rt;
  auto world = make_world(rt, 1);
  CHECK(world[0].comm->memory_space() == MemorySpace::cuda);
  on_every_rank(rt, world, host_spans);
}

TEST_CASE("comm nccl - every collective on all GPUs of the machine", "[comm][cuda]") {
  if (gpus() < 2) {
    WARN("one GPU: the multi-rank case needs two or more");
    return;
  }
  Runtime rt;
  auto world = make_world(rt, std::min(gpus(), 8));
  on_every_rank(rt, world, every_collective);
}

TEST_CASE("comm nccl - an init whose peer never comes times out", "[comm][cuda]") {
  Runtime rt;
  auto bootstrap = make_local_world(rt, 2, {.deadline = 60s});
  REQUIRE(bootstrap);
  // Rank 1 hands out the id with rank 0, then never initializes.
  auto id_only = rt.spawn(rt.make_strand(), nccl_unique_id_from((*bootstrap)[1]));
  auto init = rt.spawn(rt.make_strand(),
                       make_nccl_world(rt, (*bootstrap)[0], {.device = 0, .init_deadline = 200ms}));
  REQUIRE(id_only.get());
  auto made = init.get();
  REQUIRE_FALSE(made);
  INFO(made.error().to_string());
  CHECK(made.error().code == Errc::timeout);
}

TEST_CASE("comm nccl - a recv with no matching send times out then the communicator is unavailable",
          "[comm][cuda]") {
  if (gpus() < 2) {
    WARN("one GPU: a peer that never sends needs a second GPU");
    return;
  }
  Runtime rt;
  auto world = make_world(rt, 2, {.deadline = 200ms});
  auto memory = world[0].device->allocate(1024);
  REQUIRE(memory);
  auto first = rt.spawn(rt.make_strand(), world[0].comm->recv(memory->bytes(), 1, 0)).get();
  REQUIRE_FALSE(first);
  INFO(first.error().to_string());
  CHECK(first.error().code == Errc::timeout);
  auto later = rt.spawn(rt.make_strand(), world[0].comm->barrier()).get();
  REQUIRE_FALSE(later);
  CHECK(later.error().code == Errc::unavailable);
}
