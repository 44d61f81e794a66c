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
  // From coordinates, in one pass over the mesh: planning asks this for every unit of
  // meshes of thousands of ranks.
  auto held = experts_held(unit, mesh, rank);  // checks the rank, the expert dim and num_experts
  if (!held) return fail(held.error());
  auto mine = mesh.coordinate(rank);
  if (!mine) return fail(about_unit(unit, mine.error()));
  int expert_dim = -1;
  std::int64_t expert_coord = 0;
  if (unit.has_experts()) {
    expert_dim = *mesh.dim_index(unit.expert_dim);  // experts_held checked it
    expert_coord = expert / (unit.num_experts / mesh.shape()[static_cast<std::size_t>(expert_dim)]);
  }
  int shard_dim = -1;  // none: the shard group is the whole mesh, and only `rank` has its index
  if (!unit.shard_dim.empty()) {
    auto dim = mesh.dim_index(unit.shard_dim);
    if (!dim) return fail(about_unit(unit, dim.error()));
    shard_dim = *dim;
  }

  std::vector<int> holders;
  std::vector<std::int64_t> coord(mesh.shape().size(), 0);  // of mesh.ranks()[i], counted row-major
  for (int r : mesh.ranks()) {
    const bool holds = expert_dim < 0 || coord[static_cast<std::size_t>(expert_dim)] == expert_coord;
    const bool same_shard = shard_dim < 0 ? r == rank
                                          : coord[static_cast<std::size_t>(shard_dim)] ==
                                                (*mine)[static_cast<std::size_t>(shard_dim)];
    if (holds && (all_holders || same_shard)) holders.push_back(r);
    for (std::size_t d = coord.size(); d-- > 0;) {
      if (++coord[d] < mesh.shape()[d]) break;
      coord[d] = 0;
    }
  }
  std::sort(holders.begin(), holders.end());
  return holders;
}

}  // namespace corockpt
