#pragma once
/// @file
/// Where a spec's unit lives on each rank (issue 3, "Rules"): its mesh, which experts a
/// rank holds, and the mesh and placements of the DTensors its params become.
///
/// - A unit without expert_dim or replicate_dim: one instance (expert -1) on every rank
///   of its mesh; Shard(0) over all the mesh's ranks in row-major order (the mesh
///   flattened to 1-D).
/// - A unit with expert_dim: rank r holds experts [c*k, (c+1)*k), c = r's coordinate
///   along expert_dim and k = num_experts / size of expert_dim; each is Shard(0) over the
///   1-D submesh along shard_dim through r.
/// - A unit with replicate_dim (HSDP, 2-D mesh): one instance on every rank; its mesh is
///   the whole mesh, placements one per mesh dim in the mesh's dim order: Replicate() on
///   replicate_dim, Shard(0) on shard_dim.
/// Buffers are not DTensors: a plain tensor on every rank that holds an instance.

#include <vector>

#include "corockpt/ckpt/device_mesh.hpp"
#include "corockpt/ckpt/model_spec.hpp"
#include "corockpt/ckpt/placement.hpp"
#include "corockpt/runtime/error.hpp"

namespace corockpt {

/// The mesh of `unit` (ranks 0..world_size-1, row-major).
/// @returns Errc::invalid_argument naming the unit when its mesh is unknown or invalid.
Result<DeviceMesh> unit_mesh(const ModelSpec& spec, const UnitSpec& unit);

/// The experts of `unit` that `rank` holds, ascending; {-1} for a non-expert unit.
/// `mesh` is unit_mesh's. @returns Errc::not_found when the rank is not in the mesh,
/// Errc::invalid_argument when expert_dim is not a dim of it or num_experts does not
/// divide.
Result<std::vector<int>> experts_held(const UnitSpec& unit, const DeviceMesh& mesh, int rank);

/// The mesh and placements of the DTensors of `unit`'s params on `rank`.
struct ParamPlacement {
  DeviceMesh mesh;
  std::vector<Placement> placements;  ///< one per dim of `mesh`
};

/// `mesh` is unit_mesh's. @returns the errors of experts_held, and Errc::invalid_argument
/// when shard_dim or replicate_dim is not a dim of the mesh.
Result<ParamPlacement> param_placement(const UnitSpec& unit, const DeviceMesh& mesh, int rank);

/// The group `rank`'s Shard(0) splits over (the ranks of its flat unit's slices): the
/// mesh flattened, or its 1-D submesh along shard_dim. `mesh` is unit_mesh's.
/// @returns Errc::not_found when the rank is not in the mesh.
Result<DeviceMesh> shard_group(const UnitSpec& unit, const DeviceMesh& mesh, int rank);

/// The ranks holding the same shards of `unit`'s expert `expert` (-1 outside expert
/// units) as `rank` — itself and its replicas (HSDP's replicate dim) — ascending; every
/// rank holding that instance when `all_holders` (the holders of its buffers).
/// `mesh` is unit_mesh's.
Result<std::vector<int>> instance_holders(const UnitSpec& unit, const DeviceMesh& mesh, int expert, int rank,
                                          bool all_holders);

}  // namespace corockpt
