#pragma once
/// @file
/// A deterministic synthetic training of the seed model's shape (dense FSDP units and
/// expert units on the dp submesh, Adam), scaled by flags. Gradients are a fixed
/// function of (FQN, global element index, step) and Adam is elementwise, so every
/// element's trajectory is the same whatever the world size, mesh or layout: a run
/// resumed from a checkpoint on another world size ends bit-identical to an
/// uninterrupted one, and `state_digest` (independent of the sharding) shows it.

#include <cstdint>
#include <string>
#include <vector>

#include "ckpt/model.hpp"

namespace corockpt::example {

struct TrainingShape {
  int world_size = 8;
  int expert_groups = 4;  ///< size of the mesh's ep dim; dp = world_size / expert_groups
  std::int64_t hidden = 256;
  int experts = 8;
  int layers = 2;
  std::string layout = "flat";  ///< "flat" (FSDP1) or "per_param" (FSDP2)
};

/// The model spec of that shape (Adam, lr 1e-3).
std::string training_spec_json(const TrainingShape& shape);

/// One rank's view of the model for training: every local piece of every param with
/// optimizer state, as a contiguous range of the param's global (row-major) elements —
/// a `flat` slice's part of a param and a Shard(0) shard both are — with the Adam
/// moments beside it.
class SyntheticTrainer {
 public:
  explicit SyntheticTrainer(Model& model);

  /// Forward and backward: fills the gradient of every local element for `step` (the
  /// step about to be taken, 1-based).
  void backward(std::int64_t step);
  /// Adam's update with those gradients (PyTorch's algorithm, float32 arithmetic,
  /// values stored in the params' dtype); every param's step count goes up by one.
  void optimizer_step();

  /// Bytes of parameters and optimizer state this rank holds.
  std::uint64_t state_bytes() const { return state_bytes_; }

 private:
  struct Piece {
    std::string fqn;
    std::uint32_t name_hash;
    std::int64_t first_index;  ///< global row-major index of the piece's first element
    std::int64_t count;
    DType dtype;
    std::byte* value;
    std::byte* exp_avg;
    std::byte* exp_avg_sq;
    ParamSlot* slot;
    std::size_t grad_at;  ///< offset into grads_
  };
  Model& model_;
  std::vector<Piece> pieces_;
  std::vector<ParamSlot*> slots_;  // every param with optimizer state
  std::vector<float> grads_;
  std::uint64_t state_bytes_ = 0;
};

/// The gradient of element `index` of `fqn` at `step`: small, varied, exact in float32.
float synthetic_gradient(std::uint32_t name_hash, std::int64_t index, std::int64_t step);

/// A digest of the state this rank holds that does not depend on how it is sharded:
/// a sum, over every element this rank writes to a checkpoint (replicas once), of a
/// hash of (name, global index, value bits). Summing the ranks' digests gives the
/// model's.
std::uint64_t state_digest(Model& model);

}  // namespace corockpt::example
