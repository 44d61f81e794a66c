"""corockpt.torch against PyTorch DCP's own storage, on the same state, disk and ranks.

    ~/.cache/corockpt-venv/bin/python bench/python/bench_torch.py [--procs 2] [--size-gib 2]

N processes (gloo on CPU) hold `--size-gib` of fp32 DTensors in all (params and their
two Adam moments, Shard(0) over the ranks, 64 MiB tensors) and measure, rounds alternated, medians:

- save: dcp.save with ct.StorageWriter vs FileSystemWriter(thread_count=2) (fsynced, as
  both are by default), from a barrier before the call to a barrier after it;
- load: dcp.load with ct.StorageReader vs FileSystemReader, the page cache dropped before
  each load (sync; echo 3 > /proc/sys/vm/drop_caches; said when it cannot be dropped);
- blocked: what a checkpoint blocks a training loop whose forward is `--forward-ms` of
  real CPU work (matrix products): ct.AsyncCheckpointer's async_save + wait_snapshot
  (before the "optimizer step", which then changes the state) vs dcp.async_save with its
  default stager and FileSystemWriter(thread_count=2) on a gloo group of its own (the call
  returns once the state is staged). Both saves are then awaited before the next round,
  outside what is measured.

The last lines are the ratios, `name = value` (higher is better for the first two,
lower for the third): writer/dcp_fs, load/dcp_fs, blocked/dcp_async.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp

TENSOR_BYTES = 64 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_state(rank: int, world: int, size_gib: float) -> dict:
    """A training state as get_state_dict gives one: fp32 DTensor params and their two
    Adam moments, Shard(0) over all ranks (each rank creates only its own shards), and
    the param groups."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard
    mesh = init_device_mesh("cpu", (world,))
    params = max(1, int(size_gib * (1 << 30)) // (3 * TENSOR_BYTES))
    rows, cols = 4096 * world, TENSOR_BYTES // 4 // (4096 * world)
    g = torch.Generator().manual_seed(rank)

    def shard() -> DTensor:
        local = torch.randn(rows // world, cols, generator=g)
        return DTensor.from_local(local, mesh, [Shard(0)], run_check=False, shape=torch.Size([rows, cols]),
                                  stride=(cols, 1))

    model = {f"layer{i}.weight": shard() for i in range(params)}
    moments = {name: {"exp_avg": shard(), "exp_avg_sq": shard()} for name in model}
    return {"model": model, "optim": {"state": moments, "param_groups": [{"lr": 0.1, "params": list(model)}]}}


def tensors(state: dict) -> list:
    """Every local shard of the state."""
    out = list(state["model"].values())
    for moments in state["optim"]["state"].values():
        out.extend(moments.values())
    return [t.to_local() for t in out]


def state_bytes(state: dict) -> int:
    return sum(t.numel() * 4 for t in tensors(state))


def timed(fn) -> float:
    dist.barrier()
    start = time.perf_counter()
    fn()
    dist.barrier()
    return time.perf_counter() - start


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def zeroed(state: dict) -> dict:
    for t in tensors(state):
        t.zero_()
    state["optim"]["param_groups"][0]["lr"] = 0.0
    return state


def forward_work(n: int) -> None:
    """Real CPU work standing in for forward/backward: n products of 512x512 matrices."""
    a = torch.ones(512, 512)
    for _ in range(n):
        a = torch.mm(a, a) * (1.0 / 512)


def calibrate(forward_ms: float) -> int:
    start = time.perf_counter()
    forward_work(20)
    per = (time.perf_counter() - start) / 20
    return max(1, int(forward_ms / 1000 / per))


def rank_main(rank: int, world: int, port: int, args, work_dir: str) -> None:
    import corockpt.torch as ct
    from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    say = print if rank == 0 else (lambda *a, **k: None)
    state = make_state(rank, world, args.size_gib)
    total = state_bytes(state) * world
    say(f"state: {total / (1 << 30):.2f} GiB of fp32 DTensors over {world} ranks ({len(state['model'])} params "
        f"and their Adam moments); "
        f"dir {work_dir}")
    gbs = lambda s: total / s / 1e9  # noqa: E731
    results = {"corockpt save": [], "dcp save": [], "corockpt load": [], "dcp load": [],
               "corockpt blocked": [], "dcp.async_save blocked": []}

    for r in range(args.rounds):
        for who in ("corockpt", "dcp"):
            path = os.path.join(work_dir, f"{who}-{r}")
            writer = ct.StorageWriter(path) if who == "corockpt" else FileSystemWriter(path, thread_count=2)
            seconds = timed(lambda: dcp.save(state, storage_writer=writer))
            results[f"{who} save"].append(seconds)
            say(f"round {r + 1}: {who} save {seconds:.2f} s ({gbs(seconds):.2f} GB/s)")

    dropped = True
    if not args.skip_load:
        for r in range(args.rounds):
            for who in ("corockpt", "dcp"):
                path = os.path.join(work_dir, f"{who}-{r}")
                target = zeroed(make_state(rank, world, args.size_gib))
                if rank == 0:
                    dropped = drop_caches() and dropped
                reader = ct.StorageReader(path) if who == "corockpt" else FileSystemReader(path)
                seconds = timed(lambda: dcp.load(target, storage_reader=reader))
                first = next(iter(state["model"]))
                assert torch.equal(target["model"][first].to_local(), state["model"][first].to_local()), who
                results[f"{who} load"].append(seconds)
                say(f"round {r + 1}: {who} load {seconds:.2f} s ({gbs(seconds):.2f} GB/s)")
        if not dropped:
            say("load: the page cache could not be dropped (not root?): loads may read from memory")

    for r in range(args.rounds):
        shutil.rmtree(os.path.join(work_dir, f"corockpt-{r}"), ignore_errors=True)
        shutil.rmtree(os.path.join(work_dir, f"dcp-{r}"), ignore_errors=True)

    if not args.skip_async:
        n = calibrate(args.forward_ms)
        own_group = dist.new_group(backend="gloo")
        ckpt = ct.AsyncCheckpointer(os.path.join(work_dir, "async"), keep_last=1)
        pending = None
        for r in range(args.rounds + 1):  # the first of each is a warm-up (allocation, planning)
            for who in ("corockpt", "dcp"):
                dist.barrier()
                if who == "corockpt":
                    start = time.perf_counter()
                    handle = ckpt.async_save(r, state)
                    blocked = time.perf_counter() - start
                    forward_work(n)
                    start = time.perf_counter()
                    handle.wait_snapshot()
                    blocked += time.perf_counter() - start
                    for t in tensors(state):  # the optimizer step
                        t.add_(1e-3)
                    handle.result()
                else:
                    path = os.path.join(work_dir, f"dcp-async-{r}")
                    start = time.perf_counter()
                    pending = dcp.async_save(state, storage_writer=FileSystemWriter(path, thread_count=2),
                                             process_group=own_group)
                    blocked = time.perf_counter() - start
                    forward_work(n)
                    for t in tensors(state):
                        t.add_(1e-3)
                    pending.result()
                    shutil.rmtree(path, ignore_errors=True)
                slowest = torch.tensor([blocked])  # the loop waits for its slowest rank
                dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
                blocked = slowest.item()
                if r > 0:
                    key = "corockpt blocked" if who == "corockpt" else "dcp.async_save blocked"
                    results[key].append(blocked)
                say(f"round {r}{' (warm-up)' if r == 0 else ''}: {who} blocked the loop {blocked * 1000:.0f} ms "
                    f"(forward {args.forward_ms:.0f} ms of matrix products)")
        ckpt.stop()

    if rank == 0:
        median = {k: statistics.median(v) for k, v in results.items() if v}
        for name, seconds in median.items():
            rate = f" ({gbs(seconds):.2f} GB/s)" if "blocked" not in name else ""
            print(f"median {name}: {seconds:.3f} s{rate}")
        if "dcp save" in median:
            print(f"writer/dcp_fs = {median['dcp save'] / median['corockpt save']:.2f}")
        if "dcp load" in median:
            print(f"load/dcp_fs = {median['dcp load'] / median['corockpt load']:.2f}")
        if "dcp.async_save blocked" in median:
            print(f"blocked/dcp_async = {median['corockpt blocked'] / median['dcp.async_save blocked']:.3f}")
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--size-gib", type=float, default=2.0, help="state over all ranks")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds of each kind (alternated)")
    parser.add_argument("--forward-ms", type=float, default=200.0, help="the loop's forward: CPU matrix products")
    parser.add_argument("--dir", default="/tmp", help="parent of the benchmark's fresh directory")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--skip-async", action="store_true")
    args = parser.parse_args()
    work_dir = tempfile.mkdtemp(prefix="corockpt-bench-torch-", dir=args.dir)
    try:
        mp.start_processes(rank_main, args=(args.procs, free_port(), args, work_dir), nprocs=args.procs,
                           start_method="spawn", join=True)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
