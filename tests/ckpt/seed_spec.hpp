#pragma once
// The seed model of issue 3 (PyTorch's test_fsdp_ep.py) as a spec, with the layout and
// the world size as parameters so tests can vary them.
#include <string>

namespace corockpt::test {

inline std::string seed_spec_json(const std::string& layout = "flat") {
  return R"({
  "world_size": 8,
  "meshes": {
    "global": {"shape": [8], "dim_names": ["fsdp"]},
    "dp_ep":  {"shape": [2, 4], "dim_names": ["dp", "ep"]}
  },
  "units": [
    {"name": "root",    "prefix": "",        "mesh": "global", "layout": ")" + layout + R"("},
    {"name": "second",  "prefix": "second.", "mesh": "global", "layout": ")" + layout + R"("},
    {"name": "experts", "prefix": "second.ep_layers.{expert}.", "mesh": "dp_ep",
     "shard_dim": "dp", "expert_dim": "ep", "num_experts": 4, "layout": ")" + layout + R"("}
  ],
  "params": [
    {"unit": "root",    "name": "net.0.weight",  "shape": [16, 16]},
    {"unit": "root",    "name": "net.0.bias",    "shape": [16]},
    {"unit": "second",  "name": "net.0.weight",  "shape": [16, 16]},
    {"unit": "second",  "name": "net.0.bias",    "shape": [16]},
    {"unit": "experts", "name": "net1.0.weight", "shape": [16, 16]},
    {"unit": "experts", "name": "net1.0.bias",   "shape": [16]},
    {"unit": "experts", "name": "net2.0.weight", "shape": [16, 16]},
    {"unit": "experts", "name": "net2.0.bias",   "shape": [16]}
  ],
  "optimizer": {"type": "adam", "lr": 0.1, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
})";
}

}  // namespace corockpt::test
