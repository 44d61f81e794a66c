#include "corockpt/ckpt/dtensor.hpp"

#include <catch2/catch.hpp>

using namespace corockpt;

TEST_CASE("dtensor - make_dtensor computes the box and checks the local shape") {
  auto mesh = DeviceMesh::create({2, 4}, {"dp", "ep"}).value();
  auto dp = mesh.submesh("dp", 6).value();  // ranks {2, 6}
  Tensor shard(DType::float32, {8, 16});
  auto dt = make_dtensor(shard.view(), {16, 16}, dp, {Placement::Shard(0)}, 6);
  REQUIRE(dt);
  CHECK(dt->box == Box{{8, 0}, {8, 16}});
  CHECK(dt->mesh.ranks() == std::vector<int>{2, 6});
  CHECK(dt->local.data == shard.data());

  Tensor wrong(DType::float32, {4, 16});
  auto bad = make_dtensor(wrong.view(), {16, 16}, dp, {Placement::Shard(0)}, 6);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == Errc::invalid_argument);
  CHECK(bad.error().context.rank == 6);
  CHECK(bad.error().message.find("[4, 16]") != std::string::npos);

  auto outside = make_dtensor(shard.view(), {16, 16}, dp, {Placement::Shard(0)}, 1);
  REQUIRE_FALSE(outside);
  CHECK(outside.error().code == Errc::not_found);
}
