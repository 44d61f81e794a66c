#pragma once
/// @file
/// `DTensor`: one rank's piece of a distributed tensor, as PyTorch's DTensor: the local
/// shard (a view), the global shape, the mesh and one placement per mesh dim, and the
/// box the shard covers in the global tensor (offsets + local shape).

#include <cstdint>
#include <vector>

#include "corockpt/ckpt/box.hpp"
#include "corockpt/ckpt/device_mesh.hpp"
#include "corockpt/ckpt/placement.hpp"
#include "corockpt/ckpt/tensor_view.hpp"

namespace corockpt {

struct DTensor {
  TensorView local;  ///< shape == box.sizes
  std::vector<std::int64_t> global_shape;
  DeviceMesh mesh;
  std::vector<Placement> placements;  ///< one per mesh dim
  Box box;
};

/// A DTensor for `rank`, its box computed with local_box.
/// @returns the errors of local_box, and Errc::invalid_argument when local.shape is not
/// the box's sizes.
Result<DTensor> make_dtensor(TensorView local, std::vector<std::int64_t> global_shape,
                             DeviceMesh mesh, std::vector<Placement> placements, int rank);

}  // namespace corockpt
