#!/usr/bin/env python3
"""Derive a model spec from another for a different world size, meshes, layout or
dtype (python3 standard library only): the tests load one checkpoint on many.

Usage: derive_spec.py BASE OUT --world W [--mesh2d A,B] [--layout flat|per_param]
                      [--dtype NAME]

--world W     world_size W; every 1-D mesh becomes [W]
--mesh2d A,B  every 2-D mesh becomes [A, B] (A * B must be W)
--layout L    every unit's layout
--dtype D     every param's (and buffer's) dtype
"""
import json
import sys


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    base, out, rest = argv[1], argv[2], argv[3:]
    opts = {}
    while rest:
        key = rest.pop(0)
        if key not in ("--world", "--mesh2d", "--layout", "--dtype") or not rest:
            print(__doc__, file=sys.stderr)
            return 2
        opts[key] = rest.pop(0)
    with open(base, encoding="utf-8") as f:
        spec = json.load(f)
    if "--world" in opts:
        world = int(opts["--world"])
        spec["world_size"] = world
        for mesh in spec["meshes"].values():
            if len(mesh["shape"]) == 1:
                mesh["shape"] = [world]
    if "--mesh2d" in opts:
        shape = [int(x) for x in opts["--mesh2d"].split(",")]
        if len(shape) != 2 or shape[0] * shape[1] != spec["world_size"]:
            print("derive_spec.py: --mesh2d %s does not fit world %d" % (opts["--mesh2d"], spec["world_size"]),
                  file=sys.stderr)
            return 2
        for mesh in spec["meshes"].values():
            if len(mesh["shape"]) == 2:
                mesh["shape"] = shape
    if "--layout" in opts:
        for unit in spec["units"]:
            unit["layout"] = opts["--layout"]
    if "--dtype" in opts:
        for param in spec["params"]:
            param["dtype"] = opts["--dtype"]
    with open(out, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
