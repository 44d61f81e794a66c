"""The seed of PyTorch's test_fsdp_ep.py on FSDP2, saved through corockpt and loaded on
another world size: 8 processes (mesh 2x4, experts fully_shard-ed on mesh["dp"], one
Adam step) save through dcp.save and dcp.async_save with ct.StorageWriter and through
ct.AsyncCheckpointer; 4 processes
(mesh 2x2, two experts per rank) load into a fresh FSDP2 model through dcp.load with
ct.StorageReader and through ct.load. Every param and optimizer state is compared,
through full tensors gathered on both sides, with torch.equal; DCP's
HuggingFaceStorageReader loads the model tensors of the same files."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn

import corockpt.torch as ct
from conftest import run_ranks

EXPERTS = 4


class Dummy(nn.Module):
    pass


class Expert(nn.Module):
    def __init__(self):
        super().__init__()
        self.net1 = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
        self.net2 = nn.Sequential(nn.Linear(16, 16), nn.ReLU())


class SecondTier(nn.Module):
    def __init__(self, holds):
        super().__init__()
        self.ep_layers = nn.ModuleList([Expert() if holds(i) else Dummy() for i in range(EXPERTS)])
        self.net = nn.Sequential(nn.Linear(16, 16), nn.ReLU())


class TopModel(nn.Module):
    def __init__(self, holds):
        super().__init__()
        torch.manual_seed(0)
        self.second = SecondTier(holds)
        self.net = nn.Sequential(nn.Linear(16, 16), nn.ReLU())


def build(rank: int, world_size: int, ep: int):
    """The seed's model on FSDP2: experts rank % ep, ep + rank % ep, ... on this rank, each
    fully_shard-ed over the dp dim of a (world/ep) x ep mesh; the rest over all ranks."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    mesh = init_device_mesh("cpu", (world_size // ep, ep), mesh_dim_names=("dp", "ep"))
    everyone = init_device_mesh("cpu", (world_size,))
    model = TopModel(lambda i: i % ep == rank % ep)
    for layer in model.second.ep_layers:
        if isinstance(layer, Expert):
            fully_shard(layer, mesh=mesh["dp"])
    fully_shard(model.second, mesh=everyone)
    fully_shard(model, mesh=everyone)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    return model, optimizer


def gathered(state: dict, prefix: str = "") -> dict:
    """Every tensor of a (nested) state dict as a full tensor (DTensors gathered over
    their mesh), by flattened name."""
    out = {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(gathered(value, f"{name}."))
        elif isinstance(value, torch.Tensor):
            out[name] = value.full_tensor() if hasattr(value, "full_tensor") else value.clone()
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    out.update(gathered({str(i): item}, f"{name}."))
    return out


def save_job(rank: int, world_size: int, root: str) -> None:
    from torch.distributed.checkpoint.state_dict import get_state_dict
    model, optimizer = build(rank, world_size, ep=4)
    for p in model.parameters():  # one Adam step with deterministic gradients
        p.grad = p.detach() * 0.5 + 0.1
    optimizer.step()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}

    dcp.save(state, storage_writer=ct.StorageWriter(os.path.join(root, "dcp_save")))
    # dcp.async_save plans in the background: a gloo group of its own, never FSDP2's.
    own_group = dist.new_group(backend="gloo")
    future = dcp.async_save(state, storage_writer=ct.StorageWriter(os.path.join(root, "dcp_async_save")),
                            process_group=own_group)
    future.result()
    # corockpt's own asynchronous path.
    checkpointer = ct.AsyncCheckpointer(os.path.join(root, "async_checkpointer"))
    handle = checkpointer.async_save(1, state)
    handle.wait_snapshot()
    handle.result()
    checkpointer.stop()

    # The reference: full values, gathered here; the first rank of each gather writes them.
    reference = gathered(state)
    torch.save(reference, os.path.join(root, f"reference-{rank}.pt"))


def load_job(rank: int, world_size: int, root: str) -> None:
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    reference = {}
    for r in range(8):
        reference.update(torch.load(os.path.join(root, f"reference-{r}.pt")))
    for path in ("dcp_save", "dcp_async_save", "async_checkpointer/step-00000001"):
        for how in ("dcp.load", "ct.load"):
            model, optimizer = build(rank, world_size, ep=2)
            model_sd, optim_sd = get_state_dict(model, optimizer)  # optimizer state initialised
            state = {"model": model_sd, "optim": optim_sd}
            if how == "dcp.load":
                dcp.load(state, storage_reader=ct.StorageReader(os.path.join(root, path)))
            else:
                ct.load(state, os.path.join(root, path))
            set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
            model_sd, optim_sd = get_state_dict(model, optimizer)
            loaded = gathered({"model": model_sd, "optim": optim_sd})
            assert loaded, "nothing loaded"
            for name, tensor in loaded.items():
                assert name in reference, f"{path} {how}: {name} was not saved"
                assert torch.equal(tensor, reference[name]), f"{path} {how}: {name} differs"
            experts = {n.split(".")[3] for n in loaded if n.startswith("model.second.ep_layers.")}
            assert experts == {str(rank % 2), str(rank % 2 + 2)}, experts
            assert optim_sd["param_groups"][0]["lr"] == 0.1

    # DCP's own Hugging Face reader, on the files the writer wrote: the model tensors.
    model, optimizer = build(rank, world_size, ep=2)
    model_sd, _ = get_state_dict(model, optimizer)
    for value in model_sd.values():
        value.to_local().zero_()
    dcp.load({"model": model_sd}, storage_reader=HuggingFaceStorageReader(os.path.join(root, "dcp_save")))
    for name, tensor in gathered({"model": model_sd}).items():
        assert torch.equal(tensor, reference[name]), f"HuggingFaceStorageReader: {name} differs"


def test_the_fsdp2_ep_seed_saved_on_8_processes_loads_on_4_through_every_path(tmp_path):
    root = str(tmp_path)
    run_ranks(8, save_job, root)
    for path in ("dcp_save", "dcp_async_save", "async_checkpointer/step-00000001"):
        assert os.path.exists(os.path.join(root, path, "corockpt.metadata.json")), path
    run_ranks(4, load_job, root)
