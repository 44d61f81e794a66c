#!/usr/bin/env python3
"""Load a corockpt checkpoint directory with PyTorch DCP's HuggingFaceStorageReader
and verify every element against the known-value formula.

Usage: torch_hf_load.py CKPT_DIR EXPECT_JSON [CKPT_DIR EXPECT_JSON ...]
  (several pairs share one torch import; the first failure stops it)

EXPECT_JSON is either
- {"<fqn>": {"dtype": "float32"|"bfloat16"|"int64"|"bool"|..., "shape": [...]}, ...}
  (dtype names are torch attribute names: torch.<dtype>), or
- a checkpoint's corockpt.metadata.json ({"format": "corockpt", "tensors": {name:
  {"dtype", "shape", "chunks"}}, ...}): every tensor it records is expected, with its
  dtype and global shape (corockpt's dtype names are torch's).

Known-value formula, for tensor name n and row-major element index i:
    v = (fnv1a32(n) + i) % 251
    float dtypes: v / 8        integer dtypes: v        bool: v % 2 == 1
The expected value is computed in float64 / int64 and cast to the tensor's dtype
with torch's ordinary conversion (so e.g. int8 wraps v > 127 two's-complement).

Exit codes: 0 all elements match, 1 mismatch / load error, 2 usage error,
77 torch (or the DCP HF reader, or safetensors) not importable.
"""
import json
import sys
import warnings

SKIP = 77


def fnv1a32(name: str) -> int:
    h = 2166136261
    for b in name.encode("utf-8"):
        h ^= b
        h = (h * 16777619) & 0xFFFFFFFF
    return h


def main(argv):
    if len(argv) < 3 or len(argv) % 2 != 1:
        print(__doc__, file=sys.stderr)
        return 2
    pairs = list(zip(argv[1::2], argv[2::2]))

    try:
        import torch
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import HuggingFaceStorageReader
    except Exception as e:  # ImportError, OSError from missing shared libs, ...
        print(f"skipped: torch not importable ({type(e).__name__}: {e})")
        return SKIP
    try:
        import safetensors  # noqa: F401  (the HF reader imports it lazily)
    except Exception as e:
        print(f"skipped: torch not importable (safetensors missing: {e})")
        return SKIP

    for ckpt_dir, expect_path in pairs:
        rc = check(torch, dcp, HuggingFaceStorageReader, ckpt_dir, expect_path)
        if rc != 0:
            return rc
    return 0


def check(torch, dcp, HuggingFaceStorageReader, ckpt_dir, expect_path):
    """Loads one checkpoint and checks it; 0 when every element matches, else 1."""
    with open(expect_path, "r", encoding="utf-8") as f:
        expect = json.load(f)
    if expect.get("format") == "corockpt" and isinstance(expect.get("tensors"), dict):
        expect = {
            name: {"dtype": record["dtype"], "shape": record["shape"]}
            for name, record in expect["tensors"].items()
        }
        if not expect:
            print(f"FAIL: {expect_path} records no tensors")
            return 1

    state_dict = {}
    for name, spec in expect.items():
        dtype = getattr(torch, spec["dtype"], None)
        if not isinstance(dtype, torch.dtype):
            print(f"FAIL: {name}: unknown dtype {spec['dtype']!r}")
            return 1
        shape = [int(d) for d in spec["shape"]]
        t = torch.empty(shape, dtype=dtype)
        # Poison the destination so chunks the reader never wrote are caught.
        if dtype == torch.bool:
            t.fill_(False)
        elif dtype.is_floating_point:
            t.fill_(float("nan"))
        else:
            t.fill_(-1)
        state_dict[name] = t

    # A single process: no init_process_group; no_dist=True is explicit
    # (load() also falls back to it when the default group is not initialized).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dcp.load(
                state_dict,
                storage_reader=HuggingFaceStorageReader(ckpt_dir),
                no_dist=True,
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # DCP wraps errors in CheckpointException(BaseException)
            lines = str(e).strip().splitlines() or [""]
            print(f"FAIL: dcp.load raised {type(e).__name__}: {lines[-1]}")
            return 1

    checked = 0
    for name, spec in expect.items():
        t = state_dict[name]
        want_shape = tuple(int(d) for d in spec["shape"])
        if tuple(t.shape) != want_shape:
            print(f"FAIL: {name}: shape {tuple(t.shape)} != expected {want_shape}")
            return 1
        n = t.numel()
        idx = torch.arange(n, dtype=torch.int64)
        v = (fnv1a32(name) + idx) % 251
        if t.dtype == torch.bool:
            exp = (v % 2) == 1
        elif t.dtype.is_floating_point or t.dtype.is_complex:
            exp = (v.to(torch.float64) / 8).to(t.dtype)
        else:
            exp = v.to(t.dtype)
        got = t.reshape(-1)
        eq = got == exp
        if not bool(eq.all()):
            i = int((~eq).nonzero()[0, 0])
            print(
                f"FAIL: {name} ({t.dtype}, shape {list(want_shape)}): element {i} "
                f"= {got[i].item()!r}, expected {exp[i].item()!r} "
                f"({int((~eq).sum())} of {n} elements differ)"
            )
            return 1
        checked += n

    print(f"ok: torch {torch.__version__} DCP HuggingFaceStorageReader: {len(expect)} tensors, "
          f"{checked} elements checked in {ckpt_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
