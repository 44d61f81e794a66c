#pragma once
// The seed model of issue 3 (PyTorch's test_fsdp_ep.py) as a spec, with the layout and
// the world size as parameters so tests can vary them.
#include <string>

namespace corockpt::test {

/// The seed on `world` ranks with experts split over `ep` groups (mesh dp_ep is
/// [world / ep, ep]), every param of `dtype`.
inline std::string seed_spec_json(const std::string& layout = "flat", int world = 8, int ep = 4,
                                  const std::string& dtype = "float32") {
  const std::string n = std::to_string(world), e = std::to_string(ep), d = std::to_string(world / ep);
  const std::string t = R"(, "dtype": ")" + dtype + R"("})";
  return R"({
  "world_size": )" + n + R"(,
  "meshes": {
    "global": {"shape": [)" + n + R"(], "dim_names": ["fsdp"]},
    "dp_ep":  {"shape": [)" + d + ", " + e + R"(], "dim_names": ["dp", "ep"]}
  },
  "units": [
    {"name": "root",    "prefix": "",        "mesh": "global", "layout": ")" + layout + R"("},
    {"name": "second",  "prefix": "second.", "mesh": "global", "layout": ")" + layout + R"("},
    {"name": "experts", "prefix": "second.ep_layers.{expert}.", "mesh": "dp_ep",
     "shard_dim": "dp", "expert_dim": "ep", "num_experts": 4, "layout": ")" + layout + R"("}
  ],
  "params": [
    {"unit": "root",    "name": "net.0.weight",  "shape": [16, 16])" + t + R"(,
    {"unit": "root",    "name": "net.0.bias",    "shape": [16])" + t + R"(,
    {"unit": "second",  "name": "net.0.weight",  "shape": [16, 16])" + t + R"(,
    {"unit": "second",  "name": "net.0.bias",    "shape": [16])" + t + R"(,
    {"unit": "experts", "name": "net1.0.weight", "shape": [16, 16])" + t + R"(,
    {"unit": "experts", "name": "net1.0.bias",   "shape": [16])" + t + R"(,
    {"unit": "experts", "name": "net2.0.weight", "shape": [16, 16])" + t + R"(,
    {"unit": "experts", "name": "net2.0.bias",   "shape": [16])" + t + R"(
  ],
  "optimizer": {"type": "adam", "lr": 0.1, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
})";
}

/// `json` (a seed spec) with `n` x `n` weights instead of 16 x 16: units larger than a
/// few KiB, for tests of staging budgets.
inline std::string with_weights(std::string json, int n) {
  const std::string from = "[16, 16]", to = "[" + std::to_string(n) + ", " + std::to_string(n) + "]";
  for (std::size_t at = json.find(from); at != std::string::npos; at = json.find(from, at + to.size())) {
    json.replace(at, from.size(), to);
  }
  return json;
}

}  // namespace corockpt::test
