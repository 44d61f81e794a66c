#!/usr/bin/env python3
"""The tensors a checkpoint of a model spec must hold, derived from the spec alone (never
from what corockpt wrote), by the naming rules of DESIGN.md and PyTorch's flattening:

- a param's FQN is its unit's prefix, with "{expert}" replaced by each expert index
  0..num_experts-1 for an expert unit (every expert is saved), then its name;
- dtype: the param's "dtype" (default float32); shape: its "shape";
- every trainable param (not "frozen", not a "buffer") has optimizer state, named
  state.<fqn>.<state>: Adam's exp_avg and exp_avg_sq (the param's dtype and shape) and
  step (0-d float32); SGD's momentum_buffer only when its momentum is not 0.

Usage as a program: spec_tensors.py SPEC_JSON prints {name: {"dtype", "shape"}}.
"""
import json
import sys


def expected_tensors(spec):
    """{name: {"dtype": str, "shape": [int]}} for the spec (a parsed JSON object)."""
    units = {u["name"]: u for u in spec["units"]}
    optimizer = spec.get("optimizer")
    if optimizer is None:
        states = []
    elif optimizer.get("type", "adam") == "adam":
        states = ["exp_avg", "exp_avg_sq", "step"]
    elif float(optimizer.get("momentum", 0.0)) != 0.0:
        states = ["momentum_buffer"]
    else:
        states = []
    out = {}
    for param in spec["params"]:
        unit = units[param["unit"]]
        prefix = unit.get("prefix", "")
        if "expert_dim" in unit or "num_experts" in unit:
            prefixes = [prefix.replace("{expert}", str(e)) for e in range(int(unit.get("num_experts", 1)))]
        else:
            prefixes = [prefix]
        dtype = param.get("dtype", "float32")
        shape = [int(d) for d in param["shape"]]
        trainable = not param.get("frozen", False) and not param.get("buffer", False)
        for p in prefixes:
            fqn = p + param["name"]
            out[fqn] = {"dtype": dtype, "shape": shape}
            if not trainable:
                continue
            for state in states:
                if state == "step":
                    out[f"state.{fqn}.step"] = {"dtype": "float32", "shape": []}
                else:
                    out[f"state.{fqn}.{state}"] = {"dtype": dtype, "shape": shape}
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    with open(sys.argv[1], "r", encoding="utf-8") as f:
        print(json.dumps(expected_tensors(json.load(f)), indent=1, sort_keys=True))
