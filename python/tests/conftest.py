"""Shared helpers of corockpt's Python tests: real torch, real processes (gloo on CPU)."""

from __future__ import annotations

import os
import socket
import traceback

import pytest
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, function, args, errors):
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        function(rank, world_size, *args)
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        errors.put((rank, traceback.format_exc()))
        raise
    finally:
        dist.destroy_process_group()


def run_ranks(world_size: int, function, *args) -> None:
    """Runs ``function(rank, world_size, *args)`` in ``world_size`` processes joined by a
    gloo process group; fails the test with every failing rank's traceback."""
    context = mp.get_context("spawn")
    errors = context.Queue()
    port = free_port()
    processes = [context.Process(target=_rank_main, args=(r, world_size, port, function, args, errors))
                 for r in range(world_size)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=600)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    for p in processes:
        if p.is_alive():
            p.kill()
            failures.append((-1, "a rank did not finish in 600 s"))
        elif p.exitcode != 0 and not failures:
            failures.append((-1, f"a rank exited with {p.exitcode}"))
    if failures:
        pytest.fail("\n".join(f"rank {rank}:\n{text}" for rank, text in sorted(failures)))


@pytest.fixture
def corockpt_cli():
    """The corockpt command-line tool of the build (COROCKPT_CLI), or skip."""
    path = os.environ.get("COROCKPT_CLI")
    if not path or not os.path.exists(path):
        pytest.skip("COROCKPT_CLI is not set to the corockpt tool (CTest sets it)")
    return path
