"""ct.AsyncCheckpointer: snapshots behind a fence, values captured at the request, the
C++ checkpointer's retention and failures, bad inputs refused by name, SIGTERM, an
FSDP2 training loop resumed on another world size bit-identical to an uninterrupted run,
and an FSDP2 loop stepping unit by unit behind per-unit fences."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import corockpt
import corockpt.torch as ct
from conftest import run_ranks


def state_of(weight, exp_avg, buffer, step):
    return {
        "model": {"layer.weight": weight, "norm.running_mean": buffer},
        "optim": {"state": {"layer.weight": {"exp_avg": exp_avg, "step": step}},
                  "param_groups": [{"lr": 0.1, "params": ["layer.weight"]}]},
        "epoch": 3,
    }


def test_the_snapshot_is_the_state_at_the_request_and_the_step_may_follow_the_fence(tmp_path):
    weight, exp_avg = torch.arange(12.0).reshape(3, 4), torch.ones(3, 4)
    buffer, step = torch.zeros(4), torch.tensor(5.0)
    ckpt = ct.AsyncCheckpointer(tmp_path, keep_last=2)
    handle = ckpt.async_save(5, state_of(weight, exp_avg, buffer, step))
    buffer.add_(7)  # the next forward changes a buffer before the fence: not in the save
    handle.wait_snapshot()
    weight.mul_(-1)  # the optimizer step after the fence: not in the save either
    exp_avg.add_(1)
    step.add_(1)
    assert handle.result() is None
    assert handle.stall_seconds() >= 0

    path = ct.latest(tmp_path)
    assert path == str(tmp_path / "step-00000005")
    loaded = state_of(torch.zeros(3, 4), torch.zeros(3, 4), torch.full((4,), 9.0), torch.tensor(0.0))
    loaded["epoch"] = None
    ct.load(loaded, path)
    assert torch.equal(loaded["model"]["layer.weight"], torch.arange(12.0).reshape(3, 4))
    assert torch.equal(loaded["model"]["norm.running_mean"], torch.zeros(4))
    assert torch.equal(loaded["optim"]["state"]["layer.weight"]["exp_avg"], torch.ones(3, 4))
    assert loaded["optim"]["state"]["layer.weight"]["step"].item() == 5.0
    assert loaded["epoch"] == 3
    assert loaded["optim"]["param_groups"][0]["lr"] == 0.1

    for s in (10, 15):  # keep_last=2: step 5 goes once 15 commits
        ckpt.async_save(s, state_of(weight, exp_avg, buffer, step)).result()
    ckpt.stop(timeout=30.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000010", "step-00000015"]
    assert ct.latest(tmp_path) == str(tmp_path / "step-00000015")
    with pytest.raises(corockpt.Cancelled):
        ckpt.async_save(20, state_of(weight, exp_avg, buffer, step))


def test_bad_inputs_are_named_errors_and_nothing_is_half_written(tmp_path):
    ckpt = ct.AsyncCheckpointer(tmp_path)
    with pytest.raises(corockpt.InvalidArgument, match="not contiguous"):
        ckpt.async_save(1, {"w": torch.zeros(4, 3).t()})
    with pytest.raises(corockpt.InvalidArgument, match="complex64"):
        ct.AsyncCheckpointer(tmp_path).async_save(1, {"z": torch.zeros(2, dtype=torch.complex64)})

    ckpt = ct.AsyncCheckpointer(tmp_path)
    ckpt.async_save(1, {"w": torch.zeros(4)}).result()
    with pytest.raises(corockpt.InvalidArgument, match="layout changed"):
        ckpt.async_save(2, {"w": torch.zeros(5)})
    ckpt.stop()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000001"]

    # A failure of the save itself reaches the handle: the step's directory exists already.
    ckpt = ct.AsyncCheckpointer(tmp_path)
    with pytest.raises(corockpt.AlreadyExists):
        ckpt.async_save(1, {"w": torch.ones(4)}).result()
    with pytest.raises(corockpt.AlreadyExists):  # stop reports the last save's failure too
        ckpt.stop()
    loaded = {"w": torch.full((4,), 7.0)}
    ct.load(loaded, tmp_path / "step-00000001")
    assert torch.equal(loaded["w"], torch.zeros(4))


SIGTERM_LOOP = textwrap.dedent("""
    import signal, sys, time, torch
    import corockpt.torch as ct

    stop_requested = False
    def on_sigterm(signum, frame):
        global stop_requested
        stop_requested = True
    signal.signal(signal.SIGTERM, on_sigterm)

    root = sys.argv[1]
    weights = torch.zeros(1 << 20)
    ckpt = ct.AsyncCheckpointer(root, keep_last=2)
    step = 0
    while not stop_requested:
        step += 1
        weights.add_(1)
        handle = ckpt.async_save(step, {"w": weights, "step": step})
        if step == 3:
            print("ready", flush=True)
        handle.wait_snapshot()
        time.sleep(0.01)
    ckpt.stop(timeout=10.0)
    print(f"stopped at step {step}", flush=True)
""")


def test_a_loop_that_gets_sigterm_stops_within_its_deadline_and_keeps_its_checkpoints(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(SIGTERM_LOOP)
    root = tmp_path / "ckpts"
    loop = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE, text=True)
    assert loop.stdout.readline().strip() == "ready"
    start = time.monotonic()
    loop.send_signal(signal.SIGTERM)
    out, _ = loop.communicate(timeout=60)
    assert loop.returncode == 0, out
    assert time.monotonic() - start < 15.0
    assert "stopped at step" in out
    latest = ct.latest(root)
    assert latest is not None
    loaded = {"w": torch.zeros(1 << 20), "step": 0}
    ct.load(loaded, latest)
    assert loaded["w"][0].item() == loaded["step"]  # a consistent state: weights of that very step
    assert not [p for p in root.iterdir() if ".tmp-" in p.name]


# --- an FSDP2 training loop, resumed on another world size --------------------------------

STEPS, EVERY = 12, 5


def _training(rank, world_size, root, resume, until, out):
    """FSDP2 on `world_size` processes: params, Adam and a buffer that forward changes.
    Gradients come from each parameter's own values (elementwise, no reduction across
    ranks): a real gradient reduction sums in an order that depends on the world size, so
    no run on another world size could be bit-identical; this keeps what the test checks
    to the checkpoints."""
    import torch.distributed as dist
    import torch.nn as nn
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.a = nn.Linear(8, 6)
            self.b = nn.Linear(6, 4)
            self.register_buffer("seen", torch.zeros(4))

    model = Net()
    mesh = init_device_mesh("cpu", (world_size,))
    fully_shard(model.a, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    ckpt = ct.AsyncCheckpointer(os.path.join(root, "ckpts"), keep_last=2)
    step = 0
    if resume:
        path = ct.latest(os.path.join(root, "ckpts"))
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd, "step": 0}
        ct.load(state, path)
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        step = state["step"]
    handle = None
    while step < until:
        step += 1
        model.seen.mul_(0.5).add_(step)  # "forward" changes the buffer
        for p in model.parameters():
            p.grad = torch.sin(p.detach() * step) + 0.01 * step
        if handle is not None:
            handle.wait_snapshot()  # the fence: only now may the step change the state
        optimizer.step()
        if step % EVERY == 0:
            model_sd, optim_sd = get_state_dict(model, optimizer)
            handle = ckpt.async_save(step, {"model": model_sd, "optim": optim_sd, "step": step})
    if handle is not None:
        handle.result()
    ckpt.stop()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    full = {}
    for name, value in list(model_sd.items()) + [(f"optim.{k}.{s}", v) for k, d in optim_sd["state"].items()
                                                 for s, v in d.items()]:
        full[name] = value.full_tensor() if hasattr(value, "full_tensor") else value.clone()
    if rank == 0:
        torch.save(full, out)
    dist.barrier()


def test_an_fsdp2_loop_resumed_on_another_world_size_is_bit_identical(tmp_path):
    root = str(tmp_path)
    reference = os.path.join(root, "reference.pt")
    resumed = os.path.join(root, "resumed.pt")
    run_ranks(4, _training, os.path.join(root, "uninterrupted"), False, STEPS, reference)
    run_ranks(4, _training, root, False, 10, os.path.join(root, "first.pt"))  # checkpoints at 5 and 10
    assert ct.latest(os.path.join(root, "ckpts")).endswith("step-00000010")
    run_ranks(2, _training, root, True, STEPS, resumed)
    a, b = torch.load(reference), torch.load(resumed)
    assert set(a) == set(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (torch.cuda.is_available() is False)")
def test_cuda_tensors_are_snapshot_after_the_work_queued_before_the_save(tmp_path):
    weight = torch.arange(12.0, device="cuda").reshape(3, 4)
    exp_avg, buffer, step = torch.ones(3, 4, device="cuda"), torch.zeros(4, device="cuda"), torch.tensor(5.0)
    ckpt = ct.AsyncCheckpointer(tmp_path)
    weight.add_(1)  # queued on the loop's stream before the save: the snapshot must see it
    handle = ckpt.async_save(1, state_of(weight, exp_avg, buffer, step))
    buffer.add_(7)  # the next forward
    handle.wait_snapshot()
    weight.mul_(-1)  # the optimizer step
    handle.result()
    ckpt.stop()
    loaded = state_of(torch.zeros(3, 4), torch.zeros(3, 4), torch.ones(4), torch.tensor(0.0))
    ct.load(loaded, ct.latest(tmp_path))
    assert torch.equal(loaded["model"]["layer.weight"], torch.arange(12.0).reshape(3, 4) + 1)
    assert torch.equal(loaded["model"]["norm.running_mean"], torch.zeros(4))
    assert torch.equal(loaded["optim"]["state"]["layer.weight"]["exp_avg"], torch.ones(3, 4))


class Counter:
    """An object DCP treats as Stateful: saved through state_dict(), restored through
    load_state_dict()."""

    def __init__(self, value):
        self.value = value

    def state_dict(self):
        return {"value": self.value, "seen": torch.tensor([float(self.value)])}

    def load_state_dict(self, state):
        self.value = state["value"]


def test_stateful_objects_busy_policies_and_a_staging_budget_smaller_than_the_state(tmp_path):
    weight, exp_avg = torch.arange(8.0), torch.ones(8)
    state = {"model": {"w": weight}, "optim": {"state": {"w": {"exp_avg": exp_avg}}}, "sampler": Counter(17)}

    # A budget smaller than the state: no snapshot; the save streams the live state
    # through a pool of the budget (at least two 4 KiB buffers), and the fence opens once
    # the bytes are staged.
    ckpt = ct.AsyncCheckpointer(tmp_path / "streamed", staging_budget=16)
    handle = ckpt.async_save(1, state)
    handle.wait_snapshot()
    weight.add_(100)
    handle.result()
    assert ckpt.stats()["staging_bytes"] == 8192
    ckpt.stop()
    restored = {"model": {"w": torch.zeros(8)}, "optim": {"state": {"w": {"exp_avg": torch.zeros(8)}}},
                "sampler": Counter(0)}
    ct.load(restored, ct.latest(tmp_path / "streamed"))
    assert torch.equal(restored["model"]["w"], torch.arange(8.0))
    assert restored["sampler"].value == 17  # through load_state_dict

    # when_busy="skip": a request while a save runs is skipped and counted.
    ckpt = ct.AsyncCheckpointer(tmp_path / "skipping", when_busy="skip")
    first = ckpt.async_save(1, state)
    second = ckpt.async_save(2, state)  # at once: the first still makes its files and fsyncs
    first.result()
    assert second.skipped
    with pytest.raises(corockpt.Cancelled):
        second.result()
    assert ckpt.stats()["skipped"] == 1
    ckpt.stop()
    with pytest.raises(corockpt.InvalidArgument):
        ct.AsyncCheckpointer(tmp_path, when_busy="later")


def _silent_peer(rank, world_size, root, deadline):
    ckpt = ct.AsyncCheckpointer(root, deadline=deadline)
    state = {"w": torch.full((4,), float(rank))}
    ckpt.async_save(1, state).result()  # both ranks: the first save, planned together
    if rank == 0:
        start = time.monotonic()
        handle = ckpt.async_save(2, state)  # rank 1 never asks: its plans never come
        with pytest.raises((corockpt.Timeout, corockpt.Unavailable)):
            handle.result()
        assert time.monotonic() - start < deadline + 30
        with pytest.raises(corockpt.Error, match="broke"):
            ckpt.async_save(3, state)
        with pytest.raises(corockpt.Error):
            ckpt.stop(timeout=1.0)
    else:
        time.sleep(deadline + 5)  # alive, but silent, while rank 0 waits
        ckpt.stop()


def test_a_rank_that_stops_answering_fails_the_save_within_the_checkpointers_deadline(tmp_path):
    run_ranks(2, _silent_peer, str(tmp_path), 3.0)
    assert ct.latest(tmp_path) == str(tmp_path / "step-00000001")


# --- per-unit snapshot fences --------------------------------------------------------------

def test_wait_snapshot_of_some_params_takes_tensors_or_names_and_refuses_one_not_in_the_state(tmp_path):
    weight, exp_avg = torch.arange(12.0).reshape(3, 4), torch.ones(3, 4)
    buffer, step = torch.zeros(4), torch.tensor(5.0)
    ckpt = ct.AsyncCheckpointer(tmp_path)  # no model: the state is one unit
    assert ckpt.step_order == [0] and ckpt.unit_modules == [""]
    handle = ckpt.async_save(5, state_of(weight, exp_avg, buffer, step))
    with pytest.raises(ValueError, match=r"tensor of shape \(3, 4\).*not in the checkpointed state"):
        handle.wait_snapshot([weight, torch.zeros(3, 4)])
    with pytest.raises(ValueError, match="other.weight"):
        handle.wait_snapshot(["other.weight"])
    with pytest.raises(corockpt.InvalidArgument, match="tensors or FQNs"):
        handle.wait_snapshot([3])
    handle.wait_snapshot([weight])  # the param, by its memory
    assert handle.snapshot_ready([weight]) and handle.snapshot_ready(["layer.weight"])
    assert ckpt.unit_of(weight) == 0 and ckpt.unit_of("optim.state.layer.weight.exp_avg") == 0
    weight.mul_(-1)  # its step: after its fence
    exp_avg.add_(1)
    handle.wait_snapshot(["layer.weight", "model.norm.running_mean"])  # an FQN, a key of the state
    handle.wait_snapshot()
    handle.result()
    ckpt.stop()
    loaded = state_of(torch.zeros(3, 4), torch.zeros(3, 4), torch.ones(4), torch.tensor(0.0))
    ct.load(loaded, ct.latest(tmp_path))
    assert torch.equal(loaded["model"]["layer.weight"], torch.arange(12.0).reshape(3, 4))
    assert torch.equal(loaded["optim"]["state"]["layer.weight"]["exp_avg"], torch.ones(3, 4))

    with pytest.raises(corockpt.InvalidArgument, match="step_order"):
        ct.AsyncCheckpointer(tmp_path, step_order=[1])
    with pytest.raises(corockpt.InvalidArgument, match="step_order"):
        ct.AsyncCheckpointer(tmp_path, model=torch.nn.Linear(2, 2), step_order=[0, 0])


def _local_copies(model_sd, optim_sd) -> dict:
    """Every tensor of the state as this rank holds it, copied."""
    values = {f"model.{k}": v for k, v in model_sd.items()}
    values.update({f"optim.{fqn}.{s}": v for fqn, states in optim_sd["state"].items() for s, v in states.items()})
    return {k: (v.to_local() if hasattr(v, "to_local") else v).detach().clone() for k, v in values.items()}


def _unit_by_unit(rank, world_size, root):
    """FSDP2 with four units (the root's own Linear and buffer, and three fully_shard-ed
    layers): after async_save the loop steps one unit at a time, each right after its
    fence, in three orders (one the reverse), naming the unit's params three ways; every
    checkpoint loads back bit for bit as the state was at the request."""
    import torch.nn as nn
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.inp = nn.Linear(64, 512)
            self.layers = nn.ModuleList(nn.Linear(512, 512) for _ in range(3))
            self.register_buffer("seen", torch.zeros(4))

    model = Net()
    mesh = init_device_mesh("cpu", (world_size,))
    for layer in model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

    def step(params, round_):
        for p in model.parameters():
            p.grad = torch.sin(p.detach() * round_) + 0.01 if any(p is q for q in params) else None
        optimizer.step()

    step(list(model.parameters()), 1)  # the optimizer's state exists
    orders = ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1])
    for round_, order in enumerate(orders, start=2):
        ckpt = ct.AsyncCheckpointer(os.path.join(root, f"order-{round_}"), model=model, step_order=order)
        assert ckpt.unit_modules == ["", "layers.0", "layers.1", "layers.2"]
        assert ckpt.step_order == order
        assert ckpt.unit_of(model.inp.weight) == 0 and ckpt.unit_of("layers.1.weight") == 2
        units = {u: [p for p in model.parameters() if ckpt.unit_of(p) == u] for u in order}
        model_sd, optim_sd = get_state_dict(model, optimizer)
        before = _local_copies(model_sd, optim_sd)
        handle = ckpt.async_save(round_, {"model": model_sd, "optim": optim_sd})
        assert handle._native.unit_count == 4  # the chunks reached the engine with their units
        with pytest.raises(ValueError, match="not in the checkpointed state"):
            handle.wait_snapshot([torch.ones(7)])
        for unit in order:
            params = units[unit]
            if round_ == 2:
                given = params  # the params (DTensors)
            elif round_ == 3:
                given = [fqn for fqn, p in model.named_parameters() if any(p is q for q in params)]
            else:
                given = [p.to_local() for p in params]  # their local shards, by memory
            handle.wait_snapshot(given)
            assert handle.snapshot_ready(given)
            step(params, round_)  # this unit's params and optimizer states change in place
            model.seen.add_(1)  # a buffer: captured at the request
        handle.wait_snapshot()  # the whole state's fence, as before
        handle.result()
        assert handle.stall_seconds() >= 0
        ckpt.stop()

        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        ct.load(state, ct.latest(os.path.join(root, f"order-{round_}")))  # into the model: back to the request
        after = _local_copies(state["model"], state["optim"])
        assert set(after) == set(before)
        for name in before:
            assert torch.equal(after[name], before[name]), (order, name)

    # An optimizer state keyed by the optimizer's indices (optimizer.state_dict()) belongs to
    # no param of the model: no fence would guard it.
    ckpt = ct.AsyncCheckpointer(os.path.join(root, "by-index"), model=model)
    with pytest.raises(corockpt.InvalidArgument, match="no param of the model"):
        ckpt.async_save(1, {"model": model.state_dict(), "optim": optimizer.state_dict()})
    ckpt.stop()


def test_an_fsdp2_loop_steps_unit_by_unit_behind_each_units_fence_in_any_order(tmp_path):
    run_ranks(2, _unit_by_unit, str(tmp_path))
