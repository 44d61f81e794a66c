#include "corockpt/ckpt/unit_placement.hpp"

#include <catch2/catch.hpp>

#include "tests/ckpt/seed_spec.hpp"

using namespace corockpt;

namespace {

std::vector<int> iota_ranks(int n) {
  std::vector<int> ranks(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) ranks[static_cast<std::size_t>(i)] = i;
  return ranks;
}

}  // namespace

TEST_CASE("unit_placement - the seed: global units on ranks 0..7, experts on (r%4, r%4+4)") {
  const ModelSpec spec = parse_model_spec(test::seed_spec_json()).value();
  for (const UnitSpec& unit : spec.units) {
    const DeviceMesh mesh = unit_mesh(spec, unit).value();
    CHECK(mesh.size() == 8);
    for (int r = 0; r < 8; ++r) {
      INFO("unit " << unit.name << " rank " << r);
      auto held = experts_held(unit, mesh, r).value();
      auto where = param_placement(unit, mesh, r).value();
      CHECK(where.placements == std::vector<Placement>{Placement::Shard(0)});
      REQUIRE(where.mesh.ndim() == 1);
      if (unit.has_experts()) {
        CHECK(held == std::vector<int>{r % 4});
        CHECK(where.mesh.ranks() == std::vector<int>{r % 4, r % 4 + 4});
        CHECK(where.mesh.dim_names() == std::vector<std::string>{"dp"});
      } else {
        CHECK(held == std::vector<int>{-1});
        CHECK(where.mesh.ranks() == iota_ranks(8));
      }
    }
  }
}

TEST_CASE("unit_placement - several experts per rank: experts c*k up to (c+1)*k") {
  UnitSpec unit{.name = "moe", .prefix = "moe.{expert}.", .mesh = "m", .shard_dim = "dp", .expert_dim = "ep",
                .num_experts = 8};
  const DeviceMesh mesh = DeviceMesh::create({2, 4}, {"dp", "ep"}).value();
  for (int r = 0; r < 8; ++r) {
    const int c = r % 4;
    CHECK(experts_held(unit, mesh, r).value() == std::vector<int>{2 * c, 2 * c + 1});
  }
  // The expert dim first: coordinates along it are r / 2.
  UnitSpec flipped = unit;
  const DeviceMesh ep_first = DeviceMesh::create({4, 2}, {"ep", "dp"}).value();
  CHECK(experts_held(flipped, ep_first, 5).value() == std::vector<int>{4, 5});
  CHECK(param_placement(flipped, ep_first, 5).value().mesh.ranks() == std::vector<int>{4, 5});
}

TEST_CASE("unit_placement - HSDP: the whole mesh, Replicate on replicate_dim, Shard(0) on shard_dim") {
  const DeviceMesh mesh = DeviceMesh::create({2, 4}, {"replicate", "shard"}).value();
  UnitSpec hsdp{.name = "h", .mesh = "m", .shard_dim = "shard", .replicate_dim = "replicate"};
  for (int r = 0; r < 8; ++r) {
    auto where = param_placement(hsdp, mesh, r).value();
    CHECK(where.mesh == mesh);
    CHECK(where.placements == std::vector<Placement>{Placement::Replicate(), Placement::Shard(0)});
    CHECK(experts_held(hsdp, mesh, r).value() == std::vector<int>{-1});
  }
  const DeviceMesh shard_first = DeviceMesh::create({4, 2}, {"shard", "replicate"}).value();
  CHECK(param_placement(hsdp, shard_first, 3).value().placements ==
        std::vector<Placement>{Placement::Shard(0), Placement::Replicate()});
}

TEST_CASE("unit_placement - a plain unit on a 2-d mesh shards over it flattened") {
  const DeviceMesh mesh = DeviceMesh::create({2, 4}, {"dp", "ep"}).value();
  UnitSpec plain{.name = "p", .mesh = "m"};
  auto where = param_placement(plain, mesh, 6).value();
  CHECK(where.mesh.ranks() == iota_ranks(8));
  CHECK(where.mesh.dim_names() == std::vector<std::string>{"dp_ep"});
  CHECK(where.placements == std::vector<Placement>{Placement::Shard(0)});
}

TEST_CASE("unit_placement - errors name the unit") {
  const ModelSpec spec = parse_model_spec(test::seed_spec_json()).value();
  UnitSpec lost{.name = "lost", .mesh = "nope"};
  auto mesh = unit_mesh(spec, lost);
  REQUIRE_FALSE(mesh);
  CHECK(mesh.error().message.find("unit \"lost\"") != std::string::npos);
  CHECK(mesh.error().message.find("\"nope\"") != std::string::npos);

  const DeviceMesh dp_ep = DeviceMesh::create({2, 4}, {"dp", "ep"}).value();
  auto absent = experts_held(spec.units[2], dp_ep, 8);
  REQUIRE_FALSE(absent);
  CHECK(absent.error().code == Errc::not_found);
  CHECK(absent.error().message.find("unit \"experts\"") != std::string::npos);

  UnitSpec wrong_dim = spec.units[2];
  wrong_dim.shard_dim = "tp";
  auto bad = param_placement(wrong_dim, dp_ep, 0);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message.find("'tp'") != std::string::npos);
}
