#include "corockpt/ckpt/unit_placement.hpp"

#include <algorithm>
#include <string>

namespace corockpt {

namespace {

Error about_unit(const UnitSpec& unit, Error error) {
  error.message = "unit \"" + unit.name + "\": " + error.message;
  return error;
}

}  // namespace

Result<DeviceMesh> unit_mesh(const ModelSpec& spec, const UnitSpec& unit) {
  const MeshSpec* mesh = spec.find_mesh(unit.mesh);
  if (!mesh) return fail(Errc::invalid_argument, "unit \"" + unit.name + "\": unknown mesh \"" + unit.mesh + "\"");
  auto built = DeviceMesh::create(mesh->shape, mesh->dim_names);
  if (!built) return fail(about_unit(unit, built.error()));
  return built;
}

Result<std::vector<int>> experts_held(const UnitSpec& unit, const DeviceMesh& mesh, int rank) {
  auto coord = mesh.coordinate(rank);
  if (!coord) return fail(about_unit(unit, coord.error()));
  if (!unit.has_experts()) return std::vector<int>{-1};

  auto dim = mesh.dim_index(unit.expert_dim);
  if (!dim) return fail(about_unit(unit, dim.error()));
  const std::int64_t parts = mesh.shape()[static_cast<std::size_t>(*dim)];
  if (unit.num_experts < 1 || unit.num_experts % parts != 0) {
    return fail(Errc::invalid_argument, "unit \"" + unit.name + "\": num_experts " +
                                            std::to_string(unit.num_experts) + " is not a positive multiple of " +
                                            std::to_string(parts));
  }
  const std::int64_t per_rank = unit.num_experts / parts;
  const std::int64_t first = (*coord)[static_cast<std::size_t>(*dim)] * per_rank;
  std::vector<int> experts;
  for (std::int64_t e = first; e < first + per_rank; ++e) experts.push_back(static_cast<int>(e));
  return experts;
}

Result<ParamPlacement> param_placement(const UnitSpec& unit, const DeviceMesh& mesh, int rank) {
  auto held = experts_held(unit, mesh, rank);  // checks the rank and the expert dim
  if (!held) return fail(held.error());

  if (unit.has_experts()) {
    auto sub = mesh.submesh(unit.shard_dim, rank);
    if (!sub) return fail(about_unit(unit, sub.error()));
    return ParamPlacement{std::move(*sub), {Placement::Shard(0)}};
  }
  if (!unit.replicate_dim.empty()) {
    auto replicate = mesh.dim_index(unit.replicate_dim);
    if (!replicate) return fail(about_unit(unit, replicate.error()));
    auto shard = mesh.dim_index(unit.shard_dim);
    if (!shard) return fail(about_unit(unit, shard.error()));
    // Any dim that is neither (validate rejects such meshes) is replicated too.
    std::vector<Placement> placements(static_cast<std::size_t>(mesh.ndim()), Placement::Replicate());
    placements[static_cast<std::size_t>(*shard)] = Placement::Shard(0);
    return ParamPlacement{mesh, std::move(placements)};
  }
  return ParamPlacement{mesh.flatten(), {Placement::Shard(0)}};
}

Result<DeviceMesh> shard_group(const UnitSpec& unit, const DeviceMesh& mesh, int rank) {
  if (unit.shard_dim.empty()) return mesh.flatten();
  return mesh.submesh(unit.shard_dim, rank);
}

Result<std::vector<int>> instance_holders(const UnitSpec& unit, const DeviceMesh& mesh, int expert, int rank,
                                          bool all_holders) {
  auto my_group = shard_group(unit, mesh, rank);
  if (!my_group) return fail(my_group.error());
  auto my_index = my_group->index_of(rank);
  if (!my_index) return fail(my_index.error());
  std::vector<int> holders;
  for (int r : mesh.ranks()) {
    auto experts = experts_held(unit, mesh, r);
    if (!experts) return fail(experts.error());
    if (std::find(experts->begin(), experts->end(), expert) == experts->end()) continue;
    if (!all_holders) {
      auto group = shard_group(unit, mesh, r);
      if (!group) return fail(group.error());
      auto index = group->index_of(r);
      if (!index) return fail(index.error());
      if (*index != *my_index) continue;
    }
    holders.push_back(r);
  }
  std::sort(holders.begin(), holders.end());
  return holders;
}

}  // namespace corockpt
