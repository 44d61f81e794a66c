#pragma once
/// @file
/// What `get_state_dict` returns on one rank, as PyTorch's `get_state_dict` on an FSDP
/// model: a model state dict (FQN -> DTensor shard, or a plain tensor for buffers and
/// full values) and an optimizer state dict ({"state": {FQN: {name: tensor}},
/// "param_groups": [...]}), plus the options of PyTorch's `StateDictOptions`.

#include <deque>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "corockpt/ckpt/dtensor.hpp"
#include "corockpt/ckpt/model_spec.hpp"
#include "corockpt/ckpt/tensor_view.hpp"

namespace corockpt {

/// PyTorch's `StateDictOptions`, plus `experts_to_rank0`.
struct StateDictOptions {
  /// Gathered, unsharded values instead of DTensor shards.
  bool full_state_dict = false;
  /// With full_state_dict: only rank 0 keeps values (and, as in PyTorch, only the
  /// experts it holds itself); the other ranks' model and optimizer state are empty.
  bool cpu_offload = false;
  /// Leave frozen params (requires_grad = False) out of the model state dict.
  bool ignore_frozen_params = false;
  /// set_state_dict: a key the model needs and the state dict lacks is an error.
  bool strict = true;
  /// set_state_dict: rank 0 holds a full state dict; every rank receives its shards.
  bool broadcast_from_rank0 = false;
  /// Beyond PyTorch (CLI: --experts-to-rank0). With full_state_dict, rank 0 also gets the
  /// full values of every expert, so one consolidated state dict holds the whole MoE
  /// model. Other ranks keep what they would have had without it.
  bool experts_to_rank0 = false;
};

/// One tensor of a state dict: a DTensor shard, or a plain tensor (a buffer, a full
/// value, Adam's 0-d `step`).
using StateValue = std::variant<DTensor, TensorView>;

inline bool is_dtensor(const StateValue& v) { return std::holds_alternative<DTensor>(v); }
/// The values this rank holds (a DTensor's local shard).
inline const TensorView& local_view(const StateValue& v) {
  return is_dtensor(v) ? std::get<DTensor>(v).local : std::get<TensorView>(v);
}

struct ParamGroup {
  OptimizerSpec hyperparameters;
  std::vector<std::string> params;  ///< FQNs, in registration order
};

struct OptimizerStateDict {
  /// FQN -> state name ("step", "exp_avg", "exp_avg_sq", "momentum_buffer") -> tensor.
  std::map<std::string, std::map<std::string, StateValue>> state;
  std::vector<ParamGroup> param_groups;
};

struct StateDict {
  std::map<std::string, StateValue> model;
  OptimizerStateDict optim;
  /// Memory the views above point into when it is not the model's own (gathered
  /// shards, full values, `step` scalars). A deque: adding never moves a tensor.
  std::deque<Tensor> storage;
  /// The same, in a device's memory (the gathered values of a model in device memory).
  std::deque<DeviceMemory> device_storage;

  /// A tensor owned by this state dict.
  Tensor& own(DType dtype, std::vector<std::int64_t> shape) { return storage.emplace_back(dtype, std::move(shape)); }
};

}  // namespace corockpt
