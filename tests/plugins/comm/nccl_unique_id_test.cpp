// The NCCL bootstrap through the local backend (several ranks of one process), on CPUs:
// ncclGetUniqueId needs no GPU. Built without NCCL, the id is refused as unavailable.
#include "corockpt/plugins/comm/nccl/nccl_communicator.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <vector>

#include "corockpt/plugins/comm/local/local_communicator.hpp"

using namespace corockpt;
using namespace std::chrono_literals;

TEST_CASE("comm nccl - every rank of a local world gets the same unique id from rank 0", "[comm][nccl]") {
  Runtime rt;
  constexpr int ranks = 3;
  auto world = make_local_world(rt, ranks, {.deadline = 30s});
  REQUIRE(world);
  std::vector<TaskHandle<NcclUniqueId>> handing_out;
  for (int r = 0; r < ranks; ++r) {
    handing_out.push_back(rt.spawn(rt.make_strand(), nccl_unique_id_from((*world)[static_cast<std::size_t>(r)])));
  }
  std::vector<Result<NcclUniqueId>> ids;
  for (auto& handle : handing_out) ids.push_back(handle.get());
#ifdef COROCKPT_TEST_HAVE_NCCL
  for (const auto& id : ids) {
    INFO((id ? std::string("ok") : id.error().to_string()));
    REQUIRE(id);
    CHECK(*id == *ids[0]);
  }
  CHECK(*ids[0] != NcclUniqueId{});
#else
  for (const auto& id : ids) {
    REQUIRE_FALSE(id);
    CHECK(id.error().code == Errc::unavailable);
  }
#endif
}
