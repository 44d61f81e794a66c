#pragma once
/// @file
/// A JSON description of one rank's state dict (what `corockpt statedict` writes): for
/// each tensor its dtype and either its DTensor layout (global shape, mesh ranks,
/// placements, local shape, offsets) or, for a plain tensor, its shape and `"full": true`
/// (Adam's `step` is just dtype and shape).

#include <nlohmann/json.hpp>

#include "corockpt/ckpt/state_dict.hpp"

namespace corockpt {

/// {"rank": r, "model": {...}, "optim": {"state": {...}, "param_groups": [...]}}.
nlohmann::json describe_state_dict(const StateDict& state_dict, int rank);

}  // namespace corockpt
