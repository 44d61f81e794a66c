#!/usr/bin/env python3
"""Load a corockpt checkpoint directory with PyTorch DCP's HuggingFaceStorageReader
and verify every element against the known-value formula, in one process and, with
--ranks N, again on N gloo processes, each loading its Shard(0) part into DTensors.

Usage: torch_hf_load.py [--ranks N] CKPT_DIR EXPECT_JSON [CKPT_DIR EXPECT_JSON ...]
  (several pairs share one torch import; the first failure stops it)

EXPECT_JSON says which tensors the checkpoint must hold, independently of what corockpt
wrote about it (a checkpoint's own corockpt.metadata.json is refused):
- a model spec (what `corockpt save --spec` took): the names, dtypes and shapes follow
  from it by the FSDP/EP naming rules (spec_tensors.py beside this file), or
- {"<fqn>": {"dtype": "float32"|"bfloat16"|"int64"|"bool"|..., "shape": [...]}, ...}
  (dtype names are torch attribute names: torch.<dtype>).
The checkpoint must hold exactly those tensors (no missing, misnamed or extra one), with
those dtypes and shapes; a tensor with no elements has no bytes in the files, and the
Hugging Face reader cannot see it, so such tensors are not asked for.

Known-value formula, for tensor name n and row-major element index i:
    v = (fnv1a32(n) + i) % 251
    float dtypes: v / 8        integer dtypes: v        bool: v % 2 == 1
The expected value is computed in float64 / int64 and cast to the tensor's dtype
with torch's ordinary conversion (so e.g. int8 wraps v > 127 two's-complement).
Destinations are poisoned before the load with values the formula never gives there
(NaN, -1, and for bools the opposite of each element's expected value), so an element
the reader did not write is caught.

Exit codes: 0 all elements match, 1 mismatch / load error, 2 usage error,
77 torch (or the DCP HF reader, or safetensors) not importable.
"""
import json
import os
import queue
import sys
import tempfile
import traceback
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from spec_tensors import expected_tensors  # noqa: E402

SKIP = 77


def fnv1a32(name: str) -> int:
    h = 2166136261
    for b in name.encode("utf-8"):
        h ^= b
        h = (h * 16777619) & 0xFFFFFFFF
    return h


def main(argv):
    args = argv[1:]
    ranks = 1
    if len(args) >= 2 and args[0] == "--ranks":
        ranks = int(args[1])
        args = args[2:]
    if len(args) < 2 or len(args) % 2 != 0 or ranks < 1:
        print(__doc__, file=sys.stderr)
        return 2
    pairs = list(zip(args[0::2], args[1::2]))

    try:
        import torch
        import torch.distributed.checkpoint as dcp  # noqa: F401
        from torch.distributed.checkpoint import HuggingFaceStorageReader  # noqa: F401
    except Exception as e:  # ImportError, OSError from missing shared libs, ...
        print(f"skipped: torch not importable ({type(e).__name__}: {e})")
        return SKIP
    try:
        import safetensors  # noqa: F401  (the HF reader imports it lazily)
    except Exception as e:
        print(f"skipped: torch not importable (safetensors missing: {e})")
        return SKIP

    cases = []
    for ckpt_dir, expect_path in pairs:
        expect, problem = read_expectation(expect_path)
        if problem:
            print(f"FAIL: {problem}")
            return 1
        cases.append((ckpt_dir, expect))

    for ckpt_dir, expect in cases:
        try:
            check_names(ckpt_dir, expect)
            checked = load_and_check(ckpt_dir, expect)
        except CheckFailed as e:
            print(f"FAIL: {e}")
            return 1
        print(f"ok: torch {torch.__version__} DCP HuggingFaceStorageReader: {len(expect)} tensors, "
              f"{checked} elements checked in {ckpt_dir}")
    if ranks > 1:
        return load_on_ranks(ranks, cases)
    return 0


class CheckFailed(Exception):
    pass


def read_expectation(path):
    """(expected {name: {"dtype", "shape"}}, None) or (None, what is wrong)."""
    with open(path, "r", encoding="utf-8") as f:
        document = json.load(f)
    if document.get("format") == "corockpt":
        return None, f"{path} is a checkpoint's own metadata: expectations must not come from corockpt"
    expect = expected_tensors(document) if "params" in document else document
    if not expect:
        return None, f"{path} expects no tensors"
    return expect, None


def dtype_of(torch, name, spec):
    dtype = getattr(torch, spec["dtype"], None)
    if not isinstance(dtype, torch.dtype):
        raise CheckFailed(f"{name}: unknown dtype {spec['dtype']!r}")
    return dtype


def numel(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


def check_names(ckpt_dir, expect):
    """The checkpoint, as the Hugging Face reader sees it, holds exactly the expected
    tensors with the expected dtypes and shapes (DCP's load converts dtypes silently)."""
    import torch
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    metadata = HuggingFaceStorageReader(ckpt_dir).read_metadata().state_dict_metadata
    wanted = {name for name, spec in expect.items() if numel(spec["shape"]) > 0}
    missing = sorted(wanted - set(metadata))
    extra = sorted(set(metadata) - wanted)
    if missing or extra:
        raise CheckFailed(f"{ckpt_dir}: missing {missing[:5]} ({len(missing)}), unexpected {extra[:5]} ({len(extra)})")
    for name in sorted(wanted):
        spec, found = expect[name], metadata[name]
        want_dtype = dtype_of(torch, name, spec)
        got_dtype = getattr(getattr(found, "properties", None), "dtype", None)
        if got_dtype is not None and got_dtype != want_dtype:
            raise CheckFailed(f"{name}: dtype {got_dtype} in the checkpoint, expected {want_dtype}")
        got_shape = [int(d) for d in getattr(found, "size", spec["shape"])]
        if got_shape != [int(d) for d in spec["shape"]]:
            raise CheckFailed(f"{name}: shape {got_shape} in the checkpoint, expected {spec['shape']}")


def known_values(torch, name, dtype, shape):
    """The tensor of known values, full size."""
    n = numel(shape)
    idx = torch.arange(n, dtype=torch.int64)
    v = (fnv1a32(name) + idx) % 251
    if dtype == torch.bool:
        exp = (v % 2) == 1
    elif dtype.is_floating_point or dtype.is_complex:
        exp = (v.to(torch.float64) / 8).to(dtype)
    else:
        exp = v.to(dtype)
    return exp.reshape(shape)


def poison_(torch, t, expected):
    """Fills `t` with values the known values never have in its place."""
    if t.dtype == torch.bool:
        t.copy_(~expected)
    elif t.dtype.is_floating_point:
        t.fill_(float("nan"))
    else:
        t.fill_(-1)  # v < 251: -1 (255 as uint8) is never a known value
    return t


def compare(torch, name, got, exp, where=""):
    eq = got.reshape(-1) == exp.reshape(-1)
    if not bool(eq.all()):
        i = int((~eq).nonzero()[0, 0])
        raise CheckFailed(
            f"{name} ({got.dtype}, shape {list(exp.shape)}){where}: element {i} "
            f"= {got.reshape(-1)[i].item()!r}, expected {exp.reshape(-1)[i].item()!r} "
            f"({int((~eq).sum())} of {eq.numel()} elements differ)")
    return eq.numel()


def run_load(dcp, state_dict, reader, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dcp.load(state_dict, storage_reader=reader, **kwargs)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # DCP wraps errors in CheckpointException(BaseException)
            lines = str(e).strip().splitlines() or [""]
            raise CheckFailed(f"dcp.load raised {type(e).__name__}: {lines[-1]}") from None


def load_and_check(ckpt_dir, expect):
    """One process: every expected tensor, whole, poisoned, loaded, compared."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    state_dict, expected = {}, {}
    for name, spec in expect.items():
        if numel(spec["shape"]) == 0:
            continue
        dtype = dtype_of(torch, name, spec)
        expected[name] = known_values(torch, name, dtype, spec["shape"])
        state_dict[name] = poison_(torch, torch.empty(spec["shape"], dtype=dtype), expected[name])
    # A single process: no init_process_group; no_dist=True is explicit.
    run_load(dcp, state_dict, HuggingFaceStorageReader(ckpt_dir), no_dist=True)
    return sum(compare(torch, name, state_dict[name], expected[name]) for name in expected)


def rank_main(rank, world_size, init_file, cases, results):
    """One of N processes: loads each checkpoint into DTensors sharded Shard(0) over the N
    ranks (0-d tensors: plain, on every rank) and checks the part this rank holds."""
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        mesh = init_device_mesh("cpu", (world_size,))
        for ckpt_dir, expect in cases:
            state_dict, expected = {}, {}
            for name, spec in expect.items():
                if numel(spec["shape"]) == 0:
                    continue
                dtype = dtype_of(torch, name, spec)
                full = known_values(torch, name, dtype, spec["shape"])
                if full.dim() == 0:
                    expected[name] = full
                    state_dict[name] = poison_(torch, torch.empty_like(full), full)
                    continue
                # The expected part by DTensor's own rule, and a destination sharded the same way.
                expected[name] = distribute_tensor(full, mesh, [Shard(0)]).to_local()
                target = distribute_tensor(torch.empty_like(full), mesh, [Shard(0)])
                poison_(torch, target.to_local(), expected[name])
                state_dict[name] = target
            run_load(dcp, state_dict, HuggingFaceStorageReader(ckpt_dir))
            checked = 0
            for name, exp in expected.items():
                value = state_dict[name]
                got = value.to_local() if hasattr(value, "to_local") else value
                checked += compare(torch, name, got, exp, f" on rank {rank} of {world_size}")
            results.put((rank, ckpt_dir, checked, None))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        results.put((rank, None, 0, f"{e}" if isinstance(e, CheckFailed) else traceback.format_exc()))
    finally:
        dist.destroy_process_group()


def load_on_ranks(world_size, cases):
    import torch.multiprocessing as mp
    context = mp.get_context("spawn")
    results = context.Queue()
    with tempfile.TemporaryDirectory() as work:
        init_file = os.path.join(work, "init")
        processes = [context.Process(target=rank_main, args=(r, world_size, init_file, cases, results))
                     for r in range(world_size)]
        for p in processes:
            p.start()
        # One report per rank and checkpoint; the first failure stops the wait (the other
        # ranks may be blocked in a collective of the load the failed one left).
        reports = []
        while len(reports) < world_size * len(cases):
            try:
                reports.append(results.get(timeout=600))
            except queue.Empty:
                break
            if reports[-1][3]:
                break
        for p in processes:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
    failures = [f"rank {rank}: {error}" for rank, _, _, error in reports if error]
    if not failures:
        failures = [f"rank {r} exited with {p.exitcode}" for r, p in enumerate(processes) if p.exitcode != 0]
    if failures or len(reports) != world_size * len(cases):
        print("FAIL: the load on " + str(world_size) + " ranks: " + ("; ".join(failures) or "a rank reported nothing"))
        return 1
    for ckpt_dir, _ in cases:
        per_rank = {rank: checked for rank, d, checked, _ in reports if d == ckpt_dir}
        print(f"ok: DCP HuggingFaceStorageReader on {world_size} gloo ranks, DTensors Shard(0): "
              f"{ckpt_dir}: elements checked per rank {dict(sorted(per_rank.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
