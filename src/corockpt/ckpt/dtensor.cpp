#include "corockpt/ckpt/dtensor.hpp"

#include <string>

namespace corockpt {

Result<DTensor> make_dtensor(TensorView local, std::vector<std::int64_t> global_shape,
                             DeviceMesh mesh, std::vector<Placement> placements, int rank) {
  auto box = local_box(global_shape, mesh, placements, rank);
  if (!box) return fail(box.error().with_rank(rank));
  if (local.shape != box->sizes) {
    std::string shape;
    for (auto s : local.shape) shape += (shape.empty() ? "" : ", ") + std::to_string(s);
    return fail(Errc::invalid_argument,
                "local shard of shape [" + shape + "] does not match its box " + box->to_string(),
                ErrorContext{.rank = rank});
  }
  return DTensor{std::move(local), std::move(global_shape), std::move(mesh), std::move(placements),
                 std::move(*box)};
}

}  // namespace corockpt
