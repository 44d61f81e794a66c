#pragma once
/// @file
/// `Model`: one rank's registration of an FSDP / EP model and its optimizer — what the
/// training loop fills and the collector reads. Built from a `ModelSpec` for this rank:
/// one `UnitInstance` per FSDP unit the rank holds (an expert unit gives one per expert
/// held), in registration order, each with its params' boxes and memory.
///
/// Memory: `allocate` gives every param, buffer and optimizer state its own zeroed host
/// memory (the CLI, the tests and the examples use it); a training loop that owns its
/// memory points the views at it instead (`bind`, `bind_flat`). A `flat` unit holds one contiguous slice of
/// the concatenation of its (non-buffer) params, padded so every rank of its group
/// holds the same number of elements (FSDP1's FlatParameter); optimizer states follow
/// the same layout as their params.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "corockpt/ckpt/box.hpp"
#include "corockpt/ckpt/model_spec.hpp"
#include "corockpt/ckpt/tensor_view.hpp"
#include "corockpt/ckpt/unit_placement.hpp"
#include "corockpt/plugins/comm/communicator.hpp"
#include "corockpt/runtime/task.hpp"
#include "corockpt/runtime/trace.hpp"

namespace corockpt {

/// The optimizer's per-parameter tensors, by the names PyTorch gives them.
std::vector<std::string> optimizer_state_names(const OptimizerSpec& optimizer);

struct ParamSlot {
  std::string fqn;
  const ParamSpec* spec = nullptr;
  /// This rank's box of the param: its Shard(0) rows, or the whole tensor for a buffer.
  Box box;
  /// `flat` units: where the param starts in the unit's concatenation (elements).
  std::int64_t flat_offset = 0;
  /// `per_param` units and buffers: the local shard (or whole buffer), and the
  /// optimizer's states in optimizer_state_names order (same shape).
  TensorView value;
  std::vector<TensorView> states;
  /// Adam's step count for this param (PyTorch keeps one per param; 0 before the first
  /// step). A training loop steps them together; a checkpoint may hold different ones.
  double step = 0;
};

struct UnitInstance {
  const UnitSpec* unit = nullptr;
  int expert = -1;
  /// The mesh and placements of this unit's DTensors.
  ParamPlacement placement;
  /// The group over which Shard(0) splits (this rank's index in it is `group_rank`).
  std::shared_ptr<Communicator> group;
  std::vector<int> group_ranks;  ///< global ranks, in group order
  int group_rank = 0;
  std::vector<ParamSlot> params;  ///< in registration order, buffers included

  /// `flat` units: the slice of the padded concatenation this rank holds, and the
  /// optimizer's states in the same layout.
  DType flat_dtype = DType::float32;
  std::int64_t flat_total = 0;  ///< unpadded elements of the concatenation
  std::int64_t flat_slice = 0;  ///< elements per rank (padded total / group size)
  TensorView flat_value;
  std::vector<TensorView> flat_states;

  bool is_flat() const { return unit->layout == UnitLayout::flat; }
  int group_size() const { return static_cast<int>(group_ranks.size()); }
};

/// Thread rules: a Model is one rank's and is not synchronised. Use it from one thread
/// at a time — the rank's training thread, or coroutines on the rank's executor (its
/// strand, for ranks that share a runtime). The operations that read or write its
/// memory (get_state_dict, set_state_dict, save_checkpoint, load_checkpoint, an
/// AsyncCheckpointer's snapshot) must not overlap with registration calls (bind,
/// bind_flat, allocate, move_to, set_device, set_step). Models of different ranks are
/// independent and may be used concurrently.
class Model {
 public:
  /// Builds `rank`'s registration and the group communicators it needs, split from
  /// `world` (collective: every rank of the world calls it, in the same order of
  /// models). The model refers to `spec`, which must outlive it.
  /// @returns the spec's validation and placement errors naming the item.
  static Task<std::unique_ptr<Model>> build(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> world);

  /// Gives every tensor (params, buffers, optimizer states, flat slices) its own zeroed
  /// host memory, owned by the model: for a program that does not own the memory itself
  /// (the example, the tool, tests). A training loop that owns its memory binds it
  /// instead (bind, bind_flat).
  void allocate();

  /// Moves every tensor (params, buffers, optimizer states, flat slices) into `device`
  /// memory holding its current bytes, as PyTorch's `model.to("cuda")` does; the host
  /// memory `allocate` made is released. @returns the device's errors.
  Task<void> move_to(std::shared_ptr<Device> device);
  /// `cuda` when any tensor lies in device memory, else `host`.
  MemorySpace memory_space() const;
  /// The device whose memory the model's tensors lie in: set by move_to, or by a training
  /// loop that binds its own device memory (`set_device`). The collector, set_state_dict,
  /// save and load copy through it. Null for a model in host memory.
  const std::shared_ptr<Device>& device() const { return device_; }
  void set_device(std::shared_ptr<Device> device) { device_ = std::move(device); }

  /// Points `fqn` — a `per_param` param or a buffer this rank holds — at the training
  /// loop's memory: `value` is the local shard (the whole tensor for a buffer) and
  /// `states` the optimizer's states in optimizer_state_names order, all of the param's
  /// dtype and shape `box.sizes`.
  /// @returns Errc::not_found naming an FQN this rank does not hold (a `flat` unit's
  ///   params are bound through bind_flat); Errc::invalid_argument naming the FQN when a
  ///   dtype, a shape or the number of states does not match.
  Result<void> bind(const std::string& fqn, TensorView value, std::vector<TensorView> states = {});
  /// Points a `flat` unit instance (`expert` -1 outside expert units) at the training
  /// loop's memory: its slice of `flat_slice` elements and the states' slices.
  /// @returns the same errors as bind, naming the unit.
  Result<void> bind_flat(const std::string& unit, int expert, TensorView slice, std::vector<TensorView> states = {});

  const ModelSpec& spec() const { return spec_; }
  int rank() const { return rank_; }
  int world_size() const { return spec_.world_size; }
  const std::shared_ptr<Communicator>& world() const { return world_; }
  std::vector<UnitInstance>& instances() { return instances_; }
  const std::vector<UnitInstance>& instances() const { return instances_; }
  /// Adam's step count: the largest of the params' (0 before the first step); SGD has none.
  double step() const;
  /// Sets every param's step count (a training loop's optimizer step).
  void set_step(double step);
  bool has_optimizer() const { return spec_.optimizer.has_value(); }

  /// Where the collector records its spans (one per unit instance, category "gather",
  /// this rank's). Null (the default) records nothing.
  void trace_to(Tracer* tracer) { tracer_ = tracer; }
  Tracer* tracer() const { return tracer_; }

 private:
  Model(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> world)
      : spec_(spec), rank_(rank), world_(std::move(world)) {}

  const ModelSpec& spec_;
  int rank_;
  std::shared_ptr<Communicator> world_;
  std::vector<UnitInstance> instances_;
  std::vector<std::vector<std::byte>> memory_;  // what allocate() made
  std::vector<DeviceMemory> device_memory_;     // what move_to() made
  std::shared_ptr<Device> device_;
  Tracer* tracer_ = nullptr;
};

}  // namespace corockpt
