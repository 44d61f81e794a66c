"""corockpt under PyTorch's own checkpoint API.

- ``StorageWriter(path)`` / ``StorageReader(path)``: storage for ``dcp.save``,
  ``dcp.async_save`` and ``dcp.load``. DCP plans (which rank writes what, resharding on
  load); corockpt's C++ engine writes and reads the bytes, with the GIL released: its
  format (safetensors data files that DCP's ``HuggingFaceStorageReader`` reads, CRC-32C per
  block, ``corockpt.metadata.json``), its commit protocol (a temporary directory renamed
  into place by the coordinator: a failed save never leaves anything under ``path``).
- ``load(state, path)``: fills a state dict in place from any corockpt checkpoint, in one
  process or on every rank independently (no collective).
- ``latest(root)``: the newest committed ``<root>/step-<N>``.

Names on disk are DCP's flattened keys (``model.<fqn>``, ``optim.state.<fqn>.exp_avg``,
``optim.param_groups.0.lr``): tensors as tensors, every other leaf as the bytes DCP
pickles, stored whole with a checksum.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import threading
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import (BytesStorageMetadata, ChunkStorageMetadata, Metadata,
                                                   StorageMeta, TensorProperties, TensorStorageMetadata)
from torch.distributed.checkpoint.planner import (LoadItemType, LoadPlan, LoadPlanner, SavePlan, SavePlanner,
                                                  WriteItemType)
from torch.distributed.checkpoint.storage import StorageReader as _DcpStorageReader
from torch.distributed.checkpoint.storage import StorageWriter as _DcpStorageWriter
from torch.distributed.checkpoint.storage import WriteResult
from torch.futures import Future

from corockpt import errors

__all__ = ["StorageWriter", "StorageReader", "load", "latest", "metadata"]

# The dtypes a corockpt checkpoint holds, by PyTorch's name without "torch.".
_DTYPE_NAMES = {
    torch.float32: "float32",
    torch.bfloat16: "bfloat16",
    torch.float16: "float16",
    torch.float64: "float64",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.uint8: "uint8",
    torch.bool: "bool",
}
_DTYPES = {name: dtype for dtype, name in _DTYPE_NAMES.items()}

# The default checksum block, as the C++ engine's (1 MiB).
_CHECKSUM_BLOCK = 1 << 20
# The engine's staging pool (bounds the bytes in flight per process).
_STAGING_BYTES = 128 << 20

_engine = None
_engine_lock = threading.Lock()


def _get_engine():
    """The process's engine (its runtime, storage and staging pool), made on first use."""
    global _engine
    with _engine_lock:
        if _engine is None:
            from corockpt import _native
            _engine = _native.Engine.create(_STAGING_BYTES)
        return _engine


def _dtype_name(tensor: torch.Tensor, name: str) -> str:
    try:
        return _DTYPE_NAMES[tensor.dtype]
    except KeyError:
        raise errors.InvalidArgument(
            f"{name}: dtype {tensor.dtype} is not supported (supported: "
            f"{', '.join(str(d) for d in _DTYPE_NAMES)})", context={"fqn": name}) from None


def _host_contiguous(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's elements in contiguous host memory: itself when they already are."""
    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    return tensor if tensor.is_contiguous() else tensor.contiguous()


def _chunk(name: str, tensor: torch.Tensor, shape, offsets, sizes, unit: int = 0) -> tuple:
    """The engine's description of `tensor` (contiguous, in host or CUDA memory) as box
    (offsets, sizes) of the tensor `name` of global `shape`, behind snapshot fence `unit`
    (ct.AsyncCheckpointer's; saves and loads ignore it)."""
    return (name, _dtype_name(tensor, name), [int(s) for s in shape], [int(o) for o in offsets],
            [int(s) for s in sizes], tensor.data_ptr(), tensor.numel() * tensor.element_size(), tensor.is_cuda,
            int(unit))


def _first_corockpt_error(exception: BaseException) -> BaseException | None:
    """The corockpt.Error a DCP CheckpointException wraps (from any rank), if any."""
    failures = getattr(exception, "failures", None) or {}
    for failure in failures.values():
        inner = failure[0] if isinstance(failure, tuple) else failure
        if isinstance(inner, errors.Error):
            return inner
    return None


class StorageWriter(_DcpStorageWriter):
    """DCP storage that writes a corockpt checkpoint at ``path``.

    ``dcp.save(state, storage_writer=StorageWriter(path))`` on every rank of the process
    group: DCP plans (and deduplicates replicated values), each rank's engine writes its
    data files into ``<path>.tmp-<id>``, and the coordinator commits: metadata, fsync,
    rename to ``path``. ``path`` must not exist (``corockpt.AlreadyExists``): a checkpoint
    is never overwritten in place. Tensors may lie anywhere (GPU, views): what is not
    contiguous host memory is copied there first.
    """

    def __init__(self, path: str | os.PathLike, *, checksum_block: int = _CHECKSUM_BLOCK):
        super().__init__()
        self.path = os.fspath(path)
        self.checkpoint_id = self.path
        self.checksum_block = checksum_block
        self.rank = 0
        self.is_coordinator = True

    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        if checkpoint_id:
            self.path = os.fspath(checkpoint_id)
            self.checkpoint_id = self.path

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        # DCP passes rank and use_collectives only to a parameter named `kwargs`.
        self.is_coordinator = is_coordinator
        self.rank = int(kwargs.get("rank", 0) or 0)
        if not kwargs.get("use_collectives", True):
            raise errors.InvalidArgument(
                "corockpt.torch.StorageWriter needs use_collectives=True: one coordinator commits the checkpoint")

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        # Refused before anything is created on disk: a dtype the format does not hold.
        for item in plan.items:
            if item.type != WriteItemType.BYTE_IO and item.tensor_data.properties.dtype not in _DTYPE_NAMES:
                dtype = item.tensor_data.properties.dtype
                raise errors.InvalidArgument(
                    f"{item.index.fqn}: dtype {dtype} is not supported (supported: "
                    f"{', '.join(str(d) for d in _DTYPE_NAMES)})", context={"fqn": item.index.fqn})
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        # The coordinator makes the temporary directory every rank writes into, and keeps
        # it for finish().
        self._share = {"tmp": _get_engine().begin_save(self.path), "world_size": len(plans)}
        return [dataclasses.replace(plan, storage_data=self._share) for plan in plans]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        share = plan.storage_data
        chunks, objects, held, sizes = [], [], [], []
        for item in plan.items:
            data = planner.resolve_data(item)
            name = item.index.fqn
            if item.type == WriteItemType.BYTE_IO:
                objects.append((name, data.getvalue()))
                sizes.append(len(objects[-1][1]))
                continue
            tensor = _host_contiguous(data)
            held.append(tensor)  # alive until the engine has written it
            sizes.append(tensor.numel() * tensor.element_size())
            chunk = item.tensor_data.chunk
            chunks.append(_chunk(name, tensor, item.tensor_data.size, chunk.offsets, chunk.sizes))
        rank_plan = _get_engine().write_rank_data(share["tmp"], self.rank, chunks, objects, self.checksum_block)
        # The rank's plan travels to the coordinator's finish() with its first result.
        results = [WriteResult(index=item.index, size_in_bytes=size, storage_data=None)
                   for item, size in zip(plan.items, sizes)]
        if results:
            results[0] = dataclasses.replace(results[0], storage_data={"corockpt_plan": rank_plan})
        future: Future[list[WriteResult]] = Future()
        future.set_result(results)
        return future

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        plans = [rank_results[0].storage_data["corockpt_plan"] for rank_results in results if rank_results]
        # DCP's nesting of the flattened keys, for loaders that rebuild the nested dict.
        nesting = metadata.planner_data if isinstance(metadata.planner_data, dict) else {}
        user = {"writer": "corockpt.torch.StorageWriter",
                "dcp_planner_data": {key: list(path) for key, path in nesting.items()}}
        engine = _get_engine()
        tmp = self._share["tmp"]
        try:
            engine.commit_save(plans, self._share["world_size"], json.dumps(user), self.checksum_block, tmp,
                               self.path)
        except BaseException:
            engine.abandon_save(tmp)
            raise
        metadata.storage_meta = self.storage_meta()

    def storage_meta(self) -> StorageMeta | None:
        return StorageMeta(checkpoint_id=self.path)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        return isinstance(checkpoint_id, (str, os.PathLike))


class StorageReader(_DcpStorageReader):
    """DCP storage that reads a corockpt checkpoint at ``path``: written through
    StorageWriter, by ``corockpt save`` or by the C++ AsyncCheckpointer.

    ``dcp.load(state, storage_reader=StorageReader(path))`` on any world size and mesh:
    DCP's planner reshards from the chunks the checkpoint's metadata lists (its indexes); the engine
    reads the byte ranges (every checksum block they touch verified) and converts dtypes
    as ``copy_`` does. Partial checkpoints (``*.tmp-*``) are refused.
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = os.fspath(path)
        self.checkpoint_id = self.path
        self._metadata: Metadata | None = None
        self._reader = None  # the engine's open checkpoint: its metadata read once per load

    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        if checkpoint_id:
            self.path = os.fspath(checkpoint_id)
            self.checkpoint_id = self.path
        self._metadata = None
        self._reader = None

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        # `kwargs` by that name: DCP then retries a failed read with rank=, which changes
        # nothing here; the engine's error is raised either way.
        self._reader = _get_engine().open(self.path)
        return _dcp_metadata(json.loads(self._reader.metadata_json()))

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self._metadata = metadata

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        chunks, copies, objects = [], [], []
        for request in plan.items:
            if request.type == LoadItemType.BYTE_IO:
                objects.append(request)
                continue
            name = request.storage_index.fqn
            # DCP's planner gives the destination already narrowed to the box to fill: the
            # local chunk's global offsets plus the request's offsets in it.
            destination = planner.resolve_tensor(request).detach()
            offsets = [int(a) + int(b) for a, b in zip(request.dest_index.offset, request.dest_offsets)]
            in_place = destination.device.type == "cpu" and destination.is_contiguous()
            target = destination if in_place else torch.empty(destination.shape, dtype=destination.dtype)
            shape = self._metadata.state_dict_metadata[name].size
            chunks.append(_chunk(name, target, shape, offsets, request.lengths))
            copies.append((request, destination, target))
        if chunks:
            self._reader.load(chunks, True)
        for request, destination, target in copies:
            if target is not destination:
                destination.copy_(target)
            planner.commit_tensor(request, destination)
        if objects:
            values = self._reader.read_objects([request.storage_index.fqn for request in objects])
            for request, value in zip(objects, values):
                planner.load_bytes(request, io.BytesIO(value))
        future: Future[None] = Future()
        future.set_result(None)
        return future

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        return isinstance(checkpoint_id, (str, os.PathLike))


def _dcp_metadata(document: dict) -> Metadata:
    """DCP's Metadata for a corockpt metadata document: every tensor with its chunks (DCP
    reshards from them), every object as bytes."""
    entries: dict[str, Any] = {}
    for name, record in document["tensors"].items():
        chunks = [ChunkStorageMetadata(offsets=torch.Size(c["offsets"]), sizes=torch.Size(c["sizes"]))
                  for c in record["chunks"]]
        entries[name] = TensorStorageMetadata(properties=TensorProperties(dtype=_DTYPES[record["dtype"]]),
                                              size=torch.Size(record["shape"]), chunks=chunks)
    for name in document.get("objects", {}):
        entries[name] = BytesStorageMetadata()
    nesting = document.get("user", {}).get("dcp_planner_data")
    planner_data = {key: tuple(path) for key, path in nesting.items()} if isinstance(nesting, dict) else None
    return Metadata(state_dict_metadata=entries, planner_data=planner_data)


def load(state: dict, path: str | os.PathLike, *, strict: bool = True) -> None:
    """Fills ``state`` in place from the corockpt checkpoint at ``path``.

    ``state`` is what ``dcp.load`` takes: a (nested) dict of tensors, DTensors on any mesh,
    other values and objects with ``state_dict()``/``load_state_dict()``; it is flattened as
    DCP flattens it. Tensors are filled in place (resharded, dtypes converted, every byte
    checksummed); other values are replaced. Every rank loads on its own, with no
    collective and no process group (it works without ``torch.distributed``). Keys of the
    checkpoint that ``state`` does not hold are skipped (under EP each rank holds its own
    experts); a key of ``state`` the checkpoint lacks raises ``corockpt.NotFound`` unless
    ``strict`` is False.
    """
    planner = DefaultLoadPlanner(allow_partial_load=not strict)
    try:
        dcp.load(state, storage_reader=StorageReader(path), planner=planner, no_dist=True)
    except CheckpointException as failure:
        inner = _first_corockpt_error(failure)
        if inner is not None:
            raise inner from failure
        message = str(failure)
        if "Missing key in checkpoint" in message:
            raise errors.NotFound(f"a key of the state is not in the checkpoint {os.fspath(path)}: {message}",
                                  context={"path": os.fspath(path)}) from failure
        raise


def latest(root: str | os.PathLike) -> str | None:
    """The newest committed checkpoint ``<root>/step-<N>`` (a str), or None when there is
    none. Partial saves are never the latest."""
    found = _get_engine().latest(os.fspath(root))
    return found or None


def metadata(path: str | os.PathLike) -> dict:
    """All of a committed checkpoint's metadata as one document (what ``corockpt inspect
    --json`` prints): world size, meshes, every tensor with its dtype, shape and chunks,
    objects, files, param groups, the user blob. The checkpoint keeps its tensors in
    binary indexes (format version 3); this reads them all, so it is for tools and
    tests, not for every rank of a large load."""
    return json.loads(_get_engine().open(os.fspath(path)).metadata_json())


from corockpt._async_checkpointer import AsyncCheckpointer, SaveHandle  # noqa: E402  (it uses this module)

__all__ += ["AsyncCheckpointer", "SaveHandle"]
