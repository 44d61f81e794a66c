"""ct.StorageWriter / ct.StorageReader under dcp.save and dcp.load, and ct.load: in one
process (no torch.distributed) and on gloo process groups with DTensors resharded."""

from __future__ import annotations

import fcntl
import gc
import json
import os
import subprocess

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

import corockpt
import corockpt.torch as ct
from conftest import run_ranks


def sample_state() -> dict:
    """A state dict as a training loop holds one: params of several dtypes, a 0-d step, a
    non-contiguous view, an empty tensor and non-tensor leaves (param_groups, a counter)."""
    g = torch.Generator().manual_seed(7)
    base = torch.randn(6, 4, generator=g)
    return {
        "model": {
            "layer.weight": torch.randn(5, 3, generator=g),
            "layer.bias": torch.randn(3, generator=g).to(torch.bfloat16),
            "transposed": base.t(),  # a view: DCP hands it as it is
            "embedding.ids": torch.arange(10, dtype=torch.int64),
            "empty": torch.zeros(0, 3),
            "mask": torch.tensor([True, False, True]),
        },
        "optim": {
            "state": {"layer.weight": {"step": torch.tensor(3.0), "exp_avg": torch.randn(5, 3, generator=g)}},
            "param_groups": [{"lr": 0.01, "betas": (0.9, 0.999), "params": ["layer.weight"]}],
        },
        "counter": 42,
    }


def zeros_like_state(state):
    if isinstance(state, dict):
        return {k: zeros_like_state(v) for k, v in state.items()}
    if isinstance(state, list):
        return [zeros_like_state(v) for v in state]
    if isinstance(state, torch.Tensor):
        return torch.zeros_like(state.contiguous())
    return None


def assert_same(loaded, saved, where="state"):
    if isinstance(saved, dict):
        assert set(loaded) == set(saved), where
        for k in saved:
            assert_same(loaded[k], saved[k], f"{where}.{k}")
    elif isinstance(saved, torch.Tensor):
        assert loaded.dtype == saved.dtype, where
        assert torch.equal(loaded, saved), where
    else:
        assert loaded == saved, where


def corockpt_error(failure: BaseException) -> BaseException:
    """The corockpt.Error DCP wrapped (it reports every rank's failure this way)."""
    assert isinstance(failure, CheckpointException), failure
    for value in failure.failures.values():
        inner = value[0] if isinstance(value, tuple) else value
        if isinstance(inner, corockpt.Error):
            return inner
    raise AssertionError(f"no corockpt error in {failure}")


def test_save_and_load_in_one_process_every_value_comes_back(tmp_path):
    saved = sample_state()
    path = tmp_path / "ckpt"
    dcp.save(saved, storage_writer=ct.StorageWriter(path))
    assert (path / "corockpt.metadata.json").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # committed, nothing left over

    document = ct.metadata(path)
    assert "model.layer.weight" in document["tensors"]  # DCP's flattened names, unchanged
    assert "optim.state.layer.weight.exp_avg" in document["tensors"]
    assert "optim.param_groups.0.lr" in document["objects"]
    assert document["tensors"]["model.layer.bias"]["dtype"] == "bfloat16"

    target = zeros_like_state(saved)
    target["counter"] = 0
    target["optim"]["param_groups"] = [{"lr": 0.0, "betas": None, "params": None}]
    dcp.load(target, storage_reader=ct.StorageReader(path))
    assert_same(target, saved)


def test_ct_load_fills_in_place_without_torch_distributed(tmp_path):
    saved = sample_state()
    path = tmp_path / "ckpt"
    dcp.save(saved, storage_writer=ct.StorageWriter(path))
    weight = torch.zeros(5, 3)
    target = {"model": {"layer.weight": weight, "layer.bias": torch.zeros(3, dtype=torch.float32)}}
    ct.load(target, path)  # a subset: the checkpoint's other keys are not an error
    assert target["model"]["layer.weight"] is weight  # in place
    assert torch.equal(weight, saved["model"]["layer.weight"])
    assert torch.equal(target["model"]["layer.bias"], saved["model"]["layer.bias"].float())  # converted

    missing = {"model": {"layer.weight": torch.zeros(5, 3), "not.saved": torch.zeros(2)}}
    with pytest.raises(corockpt.NotFound):
        ct.load(missing, path)
    ct.load(missing, path, strict=False)
    assert torch.equal(missing["model"]["layer.weight"], saved["model"]["layer.weight"])


def test_an_open_checkpoint_keeps_the_engine_it_reads_with(tmp_path):
    # A reader (what StorageReader holds between calls) may outlive the module's engine,
    # at interpreter exit for one: it keeps that engine's runtime and storage alive.
    path = str(tmp_path / "ckpt")
    dcp.save({"w": torch.arange(6.0)}, storage_writer=ct.StorageWriter(path), no_dist=True)
    reader = ct._get_engine().open(path)
    ct._engine = None  # the module's reference gone: the next call makes another engine
    gc.collect()
    loaded = torch.zeros(6)
    assert reader.load([ct._chunk("w", loaded, [6], [0], [6])], True) == []
    assert torch.equal(loaded, torch.arange(6.0))
    del reader
    gc.collect()


def test_hugging_face_reader_of_dcp_loads_the_tensors_of_the_same_files(tmp_path):
    pytest.importorskip("safetensors")
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    saved = sample_state()
    path = tmp_path / "ckpt"
    dcp.save({"model": saved["model"]}, storage_writer=ct.StorageWriter(path))
    # The Hugging Face reader learns the tensors from the safetensors files, and a tensor
    # with no elements has no bytes in them: it cannot see "empty".
    del saved["model"]["empty"]
    target = {"model": zeros_like_state(saved["model"])}
    dcp.load(target, storage_reader=HuggingFaceStorageReader(str(path)))
    for name, tensor in saved["model"].items():
        assert torch.equal(target["model"][name], tensor), name


def test_latest_is_the_newest_committed_step(tmp_path):
    assert ct.latest(tmp_path) is None
    for step in (5, 10):
        dcp.save({"w": torch.ones(2) * step}, storage_writer=ct.StorageWriter(tmp_path / f"step-{step:08d}"))
    (tmp_path / "step-00000015.tmp-abc").mkdir()  # an interrupted save is never the latest
    assert ct.latest(tmp_path) == str(tmp_path / "step-00000010")


def _locked_by_someone(directory) -> bool:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_the_writer_holds_its_temporary_directory_locked_from_begin_to_commit_or_abandon(tmp_path):
    # DCP begins (prepare_global_plan) and commits (finish) in separate calls: between
    # them the directory must stay locked, or `corockpt clean` would take it for a
    # killed save's leftover.
    engine = ct._get_engine()
    tmp = engine.begin_save(os.fspath(tmp_path / "abandoned"))
    assert _locked_by_someone(tmp)
    engine.abandon_save(tmp)
    assert not os.path.exists(tmp)

    path = tmp_path / "ckpt"
    writer = ct.StorageWriter(path)
    finish = writer.finish
    seen = []

    def finish_checking_the_lock(metadata, results):
        seen.append(_locked_by_someone(writer._share["tmp"]))
        finish(metadata, results)

    writer.finish = finish_checking_the_lock
    dcp.save({"w": torch.ones(3)}, storage_writer=writer)
    assert seen == [True]
    assert not _locked_by_someone(path)  # released after the commit's rename


def test_an_existing_target_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / "ckpt"
    dcp.save({"w": torch.ones(3)}, storage_writer=ct.StorageWriter(path))
    before = sorted(os.listdir(path))
    with pytest.raises(CheckpointException) as failure:
        dcp.save({"w": torch.zeros(3)}, storage_writer=ct.StorageWriter(path))
    assert isinstance(corockpt_error(failure.value), corockpt.AlreadyExists)
    assert sorted(os.listdir(path)) == before
    loaded = {"w": torch.zeros(3)}
    ct.load(loaded, path)
    assert torch.equal(loaded["w"], torch.ones(3))


def test_an_unsupported_dtype_is_a_named_error_and_nothing_is_committed(tmp_path):
    path = tmp_path / "ckpt"
    with pytest.raises(CheckpointException) as failure:
        dcp.save({"z": torch.zeros(2, dtype=torch.complex64)}, storage_writer=ct.StorageWriter(path))
    error = corockpt_error(failure.value)
    assert isinstance(error, corockpt.InvalidArgument)
    assert "complex64" in str(error)
    assert not path.exists()
    assert not list(tmp_path.iterdir())  # refused before anything was created


def test_a_corrupted_data_file_is_refused_on_load(tmp_path):
    path = tmp_path / "ckpt"
    dcp.save({"w": torch.arange(1000, dtype=torch.float32)}, storage_writer=ct.StorageWriter(path))
    data = next(p for p in path.iterdir() if p.suffix == ".safetensors")
    raw = bytearray(data.read_bytes())
    raw[-10] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(corockpt.Corrupt) as failure:
        ct.load({"w": torch.zeros(1000)}, path)
    assert "checksum mismatch" in str(failure.value)


def test_the_tool_verifies_what_the_writer_wrote_and_the_reader_loads_what_the_tool_wrote(tmp_path, corockpt_cli):
    path = tmp_path / "ckpt"
    dcp.save(sample_state(), storage_writer=ct.StorageWriter(path))
    verified = subprocess.run([corockpt_cli, "verify", str(path)], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # A Hugging Face model from the model part: names without DCP's "model." prefix.
    from safetensors.torch import load_file
    hf = tmp_path / "hf"
    consolidated = subprocess.run([corockpt_cli, "consolidate", "--strip-prefix", "model.", str(path), str(hf)],
                                  capture_output=True, text=True)
    assert consolidated.returncode == 0, consolidated.stdout + consolidated.stderr
    tensors = {}
    for file in hf.glob("*.safetensors"):
        tensors.update(load_file(file))
    expected = {k: v for k, v in sample_state()["model"].items()}
    assert set(tensors) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(tensors[name], tensor), name

    # A checkpoint of the C++ side (corockpt save: names <fqn>, state.<fqn>.<state>).
    spec = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "specs", "seed.json")
    cpp = tmp_path / "cpp"
    saved = subprocess.run([corockpt_cli, "save", "--spec", spec, str(cpp)], capture_output=True, text=True)
    assert saved.returncode == 0, saved.stdout + saved.stderr
    # What it must hold follows from the spec (never from its metadata), so a missing or
    # misnamed tensor fails the load; destinations are poisoned with values the known
    # values never have there (bools inverted), so an element left unread is caught.
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "interop"))
    from spec_tensors import expected_tensors
    from torch_hf_load import known_values, poison_
    with open(spec, encoding="utf-8") as f:
        expect = expected_tensors(json.load(f))
    document = ct.metadata(cpp)
    assert set(document["tensors"]) == set(expect)
    known = {name: known_values(torch, name, getattr(torch, e["dtype"]), e["shape"]) for name, e in expect.items()}
    flat = {name: poison_(torch, torch.empty_like(k), k) for name, k in known.items()}
    dcp.load(flat, storage_reader=ct.StorageReader(cpp))
    again = {name: poison_(torch, torch.empty_like(k), k) for name, k in known.items()}
    ct.load(again, cpp)
    for name, k in known.items():
        assert torch.equal(flat[name], k), name
        assert torch.equal(again[name], k), name


# --- several processes ------------------------------------------------------------------

def _dtensor_state(rank: int, world_size: int, mesh_shape: tuple[int, int]):
    """Full tensors (the same on every rank), and the state this rank holds of them: a
    weight Shard(0) over the whole mesh's first dim and replicated over the second, an
    expert weight sharded over a submesh, a plain replicated buffer."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh("cpu", mesh_shape, mesh_dim_names=("dp", "ep"))
    g = torch.Generator().manual_seed(11)
    full = {"w": torch.randn(7, 5, generator=g), "experts": torch.randn(4, 6, 3, generator=g),
            "buffer": torch.randn(4, generator=g)}
    state = {
        "model": {
            "w": distribute_tensor(full["w"], mesh, [Shard(0), Replicate()]),
            "experts": distribute_tensor(full["experts"], mesh["ep"], [Shard(0)]),
            "buffer": full["buffer"].clone(),
        },
        "step": 5,
    }
    return full, state


def _save_ranks(rank, world_size, path):
    _, state = _dtensor_state(rank, world_size, (2, world_size // 2))
    dcp.save(state, storage_writer=ct.StorageWriter(path))


def _load_ranks(rank, world_size, path):
    full, state = _dtensor_state(rank, world_size, (world_size // 2, 2))
    for value in state["model"].values():
        (value.to_local() if hasattr(value, "to_local") else value).zero_()
    state["step"] = 0
    dcp.load(state, storage_reader=ct.StorageReader(path))
    for name, tensor in full.items():
        value = state["model"][name]
        value = value.full_tensor() if hasattr(value, "full_tensor") else value
        assert torch.equal(value, tensor), name
    assert state["step"] == 5
    # ct.load on every rank on its own: the same values, no collective.
    for value in state["model"].values():
        (value.to_local() if hasattr(value, "to_local") else value).zero_()
    ct.load(state, path)
    for name, tensor in full.items():
        value = state["model"][name]
        value = value.full_tensor() if hasattr(value, "full_tensor") else value
        assert torch.equal(value, tensor), name


def test_dtensors_saved_on_4_ranks_load_resharded_on_2(tmp_path):
    path = str(tmp_path / "ckpt")
    run_ranks(4, _save_ranks, path)
    document = ct.metadata(tmp_path / "ckpt")
    assert document["world_size"] == 4
    assert len(document["tensors"]["model.w"]["chunks"]) == 2  # replicas written once
    run_ranks(2, _load_ranks, path)


def _save_replicated_only(rank, world_size, path):
    # Every rank holds the same plain tensor: DCP gives it to one rank, the other writes nothing.
    dcp.save({"w": torch.arange(6.0), "step": 4}, storage_writer=ct.StorageWriter(path))


def test_a_rank_with_nothing_to_write_takes_part_and_the_checkpoint_commits(tmp_path):
    path = str(tmp_path / "ckpt")
    run_ranks(2, _save_replicated_only, path)
    loaded = {"w": torch.zeros(6), "step": 0}
    ct.load(loaded, path)
    assert torch.equal(loaded["w"], torch.arange(6.0)) and loaded["step"] == 4
    document = ct.metadata(tmp_path / "ckpt")
    assert document["world_size"] == 2
