#pragma once
/// @file
/// PyTorch's answer to a state dict requested before the optimizer's first step, which
/// get_state_dict reproduces: one step with zero gradients and lr 0.

#include "corockpt/ckpt/model.hpp"

namespace corockpt::detail {

/// Gives an optimizer that has not stepped its state as PyTorch makes it: `step` 1,
/// Adam's moments from weight decay's `wd * p` (zero without it), SGD's momentum buffer
/// likewise. A no-op once the model has stepped. The model's memory must be host memory
/// (a HostMirror's for a model on a device).
void initialize_optimizer_state(Model& model);

}  // namespace corockpt::detail
