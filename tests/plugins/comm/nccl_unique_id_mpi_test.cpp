// The NCCL bootstrap under mpirun, on CPUs: rank 0 makes the unique id (ncclGetUniqueId
// needs no GPU) and the mpi world's broadcast hands it out. CTest runs this program under
// `mpirun -np 2`; every process runs every case, in the same order. Built without NCCL,
// it checks that the id is refused as unavailable on every rank alike.
#include "corockpt/plugins/comm/nccl/nccl_communicator.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "corockpt/plugins/comm/mpi/mpi_communicator.hpp"
#include "tests/support/catch_session.hpp"

using namespace corockpt;
using namespace std::chrono_literals;

namespace {

std::shared_ptr<Communicator> make_world(Runtime& rt) {
  auto world = make_mpi_world(rt, {.deadline = 60s});
  INFO((world ? std::string() : world.error().to_string()));
  REQUIRE(world);
  return *world;
}

// The id this rank got, next to every rank's (all-gathered through MPI).
struct Ids {
  NcclUniqueId mine{};
  std::vector<std::byte> everyones;
};

Task<Ids> id_and_everyones(std::shared_ptr<Communicator> world) {
  Task<NcclUniqueId> handing_out = nccl_unique_id_from(world);
  auto id = co_await std::move(handing_out);
  if (!id) co_return fail(id.error());
  Ids ids{.mine = *id, .everyones = std::vector<std::byte>(id->size() * static_cast<std::size_t>(world->size()))};
  std::span<const std::byte> send(ids.mine);
  std::span<std::byte> recv(ids.everyones);
  auto gathered = co_await world->all_gather(send, recv);
  if (!gathered) co_return fail(gathered.error());
  co_return ids;
}

bool built_with_nccl() {
#ifdef COROCKPT_TEST_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

}  // namespace

TEST_CASE("comm nccl - every process of an mpi world gets the same unique id from rank 0", "[comm][nccl]") {
  Runtime rt;
  auto world = make_world(rt);
  REQUIRE(world->size() == 2);
  auto ids = rt.spawn(rt.make_strand(), id_and_everyones(world)).get();
  if (!built_with_nccl()) {
    REQUIRE_FALSE(ids);
    CHECK(ids.error().code == Errc::unavailable);
    return;
  }
  INFO((ids ? std::string("ok") : ids.error().to_string()));
  REQUIRE(ids);
  const std::size_t n = ids->mine.size();
  for (int r = 0; r < world->size(); ++r) {
    const auto* theirs = ids->everyones.data() + static_cast<std::size_t>(r) * n;
    CHECK(std::equal(theirs, theirs + n, ids->mine.begin()));
  }
  CHECK(std::any_of(ids->mine.begin(), ids->mine.end(), [](std::byte b) { return b != std::byte{0}; }));
}

TEST_CASE("comm nccl - each bootstrap makes a fresh id", "[comm][nccl]") {
  if (!built_with_nccl()) return;
  Runtime rt;
  auto world = make_world(rt);
  auto first = rt.spawn(rt.make_strand(), id_and_everyones(world)).get();
  auto second = rt.spawn(rt.make_strand(), id_and_everyones(world)).get();
  REQUIRE(first);
  REQUIRE(second);
  CHECK(first->mine != second->mine);
}

int main(int argc, char* argv[]) {
  const int failed = corockpt::test::run_catch(argc, argv);
  if (auto finalized = finalize_mpi(); !finalized) {
    std::fprintf(stderr, "finalize_mpi: %s\n", finalized.error().to_string().c_str());
    return 1;
  }
  return failed;
}
