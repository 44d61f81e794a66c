#pragma once
/// @file
/// A deterministic synthetic training of the seed model's shape (dense FSDP units and
/// expert units on the dp submesh, Adam), scaled by flags. Gradients are a fixed
/// function of (FQN, global element index, step) and Adam is elementwise, so every
/// element's trajectory is the same whatever the world size, mesh or layout: a run
/// resumed from a checkpoint on another world size ends bit-identical to an
/// uninterrupted one, and `state_digest` (independent of the sharding) shows it.

#include <cstdint>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "corockpt/ckpt/model.hpp"
#include "examples/train/adam_scalars.hpp"
#include "corockpt/plugins/device/device.hpp"

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

/// A local piece of a param with optimizer state: a contiguous range of the param's
/// global (row-major) elements — a `flat` slice's part of a param and a Shard(0) shard
/// both are — with the Adam moments beside it, in the memory the model's views name
/// (host or device).
struct TrainingPiece {
  std::string fqn;
  std::uint32_t name_hash;
  std::int64_t first_index;  ///< global row-major index of the piece's first element
  std::int64_t count;
  DType dtype;
  std::byte* value;
  std::byte* exp_avg;
  std::byte* exp_avg_sq;
  ParamSlot* slot;
  std::size_t grad_at;  ///< offset of its gradients in an array of all pieces' (float32)
  std::uint32_t unit = 0;  ///< its Model::instances() index (LocalChunk::unit)
};

/// What one rank trains: its non-empty pieces in registration order, every param with
/// optimizer state (also those it holds no element of: their step counts go up too),
/// the gradients' total count and the bytes of params and moments.
struct TrainingPieces {
  std::vector<TrainingPiece> pieces;
  std::vector<ParamSlot*> slots;
  std::vector<std::uint32_t> slot_units;  ///< each slot's unit
  std::size_t gradients = 0;
  std::uint64_t state_bytes = 0;
};
TrainingPieces training_pieces(Model& model);

/// Adam's scalars for a param at `step` (its count after the increment).
AdamStepScalars adam_step_scalars(const OptimizerSpec& optimizer, double step);

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
  /// With `unit`, only that unit's params (a loop stepping unit by unit behind the
  /// snapshot's per-unit fences; stepping every unit once is the same step).
  void optimizer_step(std::optional<std::uint32_t> unit = std::nullopt);

  /// Bytes of parameters and optimizer state this rank holds.
  std::uint64_t state_bytes() const { return trained_.state_bytes; }

 private:
  Model& model_;
  TrainingPieces trained_;
  std::vector<float> grads_;
};

/// The gradient of element `index` of `fqn` at `step`: small, varied, exact in float32.
float synthetic_gradient(std::uint32_t name_hash, std::int64_t index, std::int64_t step);

/// A digest of the state this rank holds that does not depend on how it is sharded:
/// a sum, over every element this rank writes to a checkpoint (replicas once), of a
/// hash of (name, global index, value bits). Summing the ranks' digests gives the
/// model's. The model's memory must be host memory.
std::uint64_t state_digest(Model& model);

/// The same for a model whose memory may lie on `device`: each device chunk is copied to
/// the host first (after the compute queued on the device: Device::order_after_compute).
/// @returns the device's copy errors.
Task<std::uint64_t> state_digest(Model& model, std::shared_ptr<Device> device);

}  // namespace corockpt::example
