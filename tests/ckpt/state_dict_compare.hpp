#pragma once
// Test helpers: how two state dicts in host memory differ, and where a state dict's
// tensors lie.
#include <cstring>
#include <string>

#include "corockpt/ckpt/state_dict.hpp"

namespace corockpt::test {

inline std::string key_text(const std::string& key, const std::string& state) { return state.empty() ? key : key + "/" + state; }

// "" when `a` and `b` (both in host memory) hold the same tensors, else the first difference.
inline std::string value_difference(const std::string& key, const StateValue& a, const StateValue& b) {
  if (is_dtensor(a) != is_dtensor(b)) return key + ": DTensor in one, plain tensor in the other";
  if (is_dtensor(a)) {
    const auto& x = std::get<DTensor>(a);
    const auto& y = std::get<DTensor>(b);
    if (x.global_shape != y.global_shape || x.box != y.box || x.mesh != y.mesh || x.placements != y.placements) {
      return key + ": DTensor metadata differs";
    }
  }
  const TensorView& x = local_view(a);
  const TensorView& y = local_view(b);
  if (x.space != MemorySpace::host || y.space != MemorySpace::host) return key + ": not in host memory";
  if (x.dtype != y.dtype || x.shape != y.shape) return key + ": dtype or shape differs";
  if (x.nbytes() != 0 && std::memcmp(x.data, y.data, x.nbytes()) != 0) return key + ": values differ";
  return "";
}

inline std::string difference(const StateDict& a, const StateDict& b) {
  if (a.model.size() != b.model.size()) return "model keys: " + std::to_string(a.model.size()) + " vs " + std::to_string(b.model.size());
  for (const auto& [key, value] : a.model) {
    auto it = b.model.find(key);
    if (it == b.model.end()) return "missing " + key;
    if (auto d = value_difference(key, value, it->second); !d.empty()) return d;
  }
  if (a.optim.state.size() != b.optim.state.size()) return "optimizer state keys differ in number";
  for (const auto& [key, states] : a.optim.state) {
    auto it = b.optim.state.find(key);
    if (it == b.optim.state.end() || it->second.size() != states.size()) return "optimizer states of " + key;
    for (const auto& [name, value] : states) {
      auto jt = it->second.find(name);
      if (jt == it->second.end()) return "missing " + key_text(key, name);
      if (auto d = value_difference(key_text(key, name), value, jt->second); !d.empty()) return d;
    }
  }
  if (a.optim.param_groups.size() != b.optim.param_groups.size() ||
      (!a.optim.param_groups.empty() && a.optim.param_groups[0].params != b.optim.param_groups[0].params)) {
    return "param groups differ";
  }
  return "";
}

// Where a state dict's tensors lie, Adam's host `step` scalars aside: "host", "cuda",
// "mixed" or "empty".
inline std::string spaces_of(const StateDict& state) {
  bool host = false, device = false;
  auto note = [&](const StateValue& v) { (local_view(v).space == MemorySpace::host ? host : device) = true; };
  for (const auto& [key, value] : state.model) note(value);
  for (const auto& [key, states] : state.optim.state) {
    for (const auto& [name, value] : states) {
      if (name != "step") note(value);
    }
  }
  return host && device ? "mixed" : host ? "host" : device ? "cuda" : "empty";
}

}  // namespace corockpt::test
