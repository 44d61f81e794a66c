#pragma once
/// @file
/// The tensors `Model::allocate` gives memory to, walked in one place so that what
/// allocates and what measures the need beforehand (resource_bounds) agree.

#include <cstdint>
#include <string>
#include <vector>

#include "corockpt/ckpt/model.hpp"

namespace corockpt::detail {

/// Calls visit(name, dtype, shape, view) for each: every param and buffer of a per_param
/// unit and every buffer of a flat one, with their optimizer states (named by the param's
/// FQN), and each flat unit's slice with its states ("the flat slice of unit <name>").
/// `instances` may be const (to measure) or not (to allocate).
template <class Instances, class Visit>
void for_each_owned_tensor(Instances& instances, Visit visit) {
  for (auto& inst : instances) {
    for (auto& slot : inst.params) {
      if (inst.is_flat() && !slot.spec->buffer) continue;  // lives in the flat slice
      visit(slot.fqn, slot.spec->dtype, slot.box.sizes, slot.value);
      for (auto& state : slot.states) visit(slot.fqn, slot.spec->dtype, slot.box.sizes, state);
    }
    if (!inst.is_flat()) continue;
    const std::string flat = "the flat slice of unit " + inst.unit->name;
    const std::vector<std::int64_t> shape = {inst.flat_slice};
    visit(flat, inst.flat_dtype, shape, inst.flat_value);
    for (auto& state : inst.flat_states) visit(flat, inst.flat_dtype, shape, state);
  }
}

}  // namespace corockpt::detail
