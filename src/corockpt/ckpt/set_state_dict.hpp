#pragma once
/// @file
/// `set_state_dict`: the way back in, as PyTorch's: loads a state dict (sharded, as
/// get_state_dict returns it, or full) into a model registered on the same mesh.

#include <string>
#include <vector>

#include "corockpt/ckpt/model.hpp"
#include "corockpt/ckpt/state_dict.hpp"
#include "corockpt/runtime/task.hpp"

namespace corockpt {

/// What set_state_dict did not load (without `strict`).
struct SetReport {
  std::vector<std::string> missing;  ///< "fqn" or "fqn/state" the model needs and `state` lacks
};

/// Loads `state` into `model` on every rank (a collective).
/// - options.full_state_dict false: `state` holds this rank's DTensor shards (their boxes
///   must be this rank's); a `flat` unit rebuilds its slice with one all-gather of rows.
/// - options.full_state_dict true: `state` holds full values; with broadcast_from_rank0
///   only rank 0's are read (it must hold every expert, e.g. from experts_to_rank0) and
///   every rank receives its part over the world communicator.
/// Values convert to the model's dtypes as PyTorch's copy_ does. Adam's `step` is
/// restored. Frozen params missing from `state` are fine when ignore_frozen_params.
/// A model in device memory is loaded through a host copy of it (and of `state`'s device
/// values): load-time work, one implementation of these rules.
/// @returns with `strict`, Errc::not_found naming the first missing key; in any case
///   Errc::invalid_argument naming the FQN whose shape or box does not match.
///
/// Thread rules: a coroutine run on the rank's executor, one call per model at a time; it
/// writes the model's memory, so the training loop neither reads nor writes the model's
/// tensors until it completes. `state` must stay alive and unchanged until then.
Task<SetReport> set_state_dict(Model& model, const StateDict& state, StateDictOptions options = {});

}  // namespace corockpt
