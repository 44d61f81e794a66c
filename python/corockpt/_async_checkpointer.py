"""ct.AsyncCheckpointer: the C++ AsyncCheckpointer under a state dict of torch tensors.

The C++ checkpointer snapshots a rank's chunks into staging memory allocated once (on
corockpt's threads, not Python's) and persists them (data files, the plans' exchange,
the commit, retention) while training goes on. What this module adds is what it takes
from PyTorch:

- which values this rank writes: DCP's own planner (DefaultSavePlanner) plans the first
  save over the checkpointer's channel (replicated values written once, as dcp.save
  writes them) and the plan is kept; a later state with another layout (a tensor whose
  shape, dtype or place changed) is refused with ``corockpt.InvalidArgument``;
- CUDA tensors: the snapshot copies them on corockpt's own CUDA stream into pinned
  staging memory, ordered after the work queued on the stream that was current at the
  first save (the loop's) when ``async_save`` is called;
- what cannot wait for the fence: values that are not tensors are pickled, and tensors the
  optimizer step does not update (buffers such as BatchNorm statistics, frozen params;
  see ``_stepped_names``) are copied, before ``async_save`` returns; the tensors the step
  updates (params with optimizer state, and that state) are copied by the snapshot behind
  the fence (``handle.wait_snapshot()``);
- the channel: a gloo group the checkpointer creates for itself (never the training
  loop's group: a checkpoint's collectives must not interleave with the loop's), whose
  timeout is the checkpointer's deadline.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.planner import WriteItemType

from corockpt import errors


def _flatten_state(state: dict) -> dict:
    """``state`` with its top-level objects that have ``state_dict()`` replaced by it (as
    DCP does), so schedulers, data-loader state or RNG holders are saved."""
    flat = {}
    for key, value in state.items():
        if hasattr(value, "state_dict") and hasattr(value, "load_state_dict") and not isinstance(value, torch.Tensor):
            value = value.state_dict()
        flat[key] = value
    return flat


def _stepped_names(names: list[str]) -> set[str]:
    """The tensors an optimizer step updates, among flattened state dict keys: every
    optimizer state (``<opt>.state.<fqn>.<name>``) and the param ``<model>.<fqn>`` it
    belongs to. Everything else (buffers, frozen params, values that are not tensors)
    may change in the next forward and is captured when the save is requested."""
    params = set()
    for name in names:
        head, sep, rest = name.partition(".state.")
        if sep and "." in rest:
            params.add(rest.rsplit(".", 1)[0])
    stepped = set()
    for name in names:
        head, sep, rest = name.partition(".state.")
        if sep and rest.rsplit(".", 1)[0] in params:
            stepped.add(name)  # an optimizer state
            continue
        top, dot, fqn = name.partition(".")
        if dot and fqn in params:
            stepped.add(name)  # a param with optimizer state
    return stepped


def _layout(items) -> list[tuple]:
    """What must stay the same from one save to the next: every item's name, kind, box."""
    out = []
    for item in items:
        if item.type == WriteItemType.BYTE_IO:
            out.append((item.index.fqn, "bytes"))
        else:
            data = item.tensor_data
            out.append((item.index.fqn, str(data.properties.dtype), tuple(data.size), tuple(data.chunk.offsets),
                        tuple(data.chunk.sizes)))
    return out


class SaveHandle:
    """One save: the fence and the outcome. ``wait_snapshot()`` before the optimizer step
    that follows ``async_save``; ``result()`` is None or raises the save's corockpt.Error."""

    def __init__(self, native):
        self._native = native

    @property
    def step(self) -> int:
        return self._native.step

    @property
    def skipped(self) -> bool:
        """Requested while a save ran, with ``when_busy="skip"``: nothing was saved."""
        return self._native.skipped

    def wait_snapshot(self) -> None:
        """Blocks until the state is copied: from then on the optimizer may update it."""
        self._native.wait_snapshot()

    def done(self) -> bool:
        return self._native.done()

    def result(self, timeout: float | None = None) -> None:
        """Waits for the save to commit (None) or fail (raises its corockpt.Error);
        ``corockpt.Timeout`` when ``timeout`` seconds pass first."""
        if timeout is not None and not self._native.wait_for(timeout):
            raise errors.Timeout(f"the save of step {self.step} did not finish within {timeout} s")
        self._native.result()

    def stall_seconds(self) -> float:
        """How long the training loop waited in ``wait_snapshot``."""
        return self._native.stall_seconds()


class AsyncCheckpointer:
    """Checkpoints of a PyTorch state dict that cost the training loop a memory copy.

    Create it on every rank at the same point (it makes its channel, a collective);
    ``async_save(step, state)`` on every rank at the same steps. Checkpoints go to
    ``<root>/step-<N>`` (``ct.latest(root)`` finds the newest), ``keep_last`` newest kept
    (0: all). ``when_busy``: "wait" (a request while a save runs starts when it ends) or
    "skip". ``staging_budget``: bytes of snapshot memory (None: the state's size; less
    streams from the live state and the stall grows to the write). ``deadline``: seconds
    one exchange between ranks may take before the save fails (and the channel with it).
    """

    def __init__(self, root: str | os.PathLike, *, keep_last: int = 0, when_busy: str = "wait",
                 staging_budget: int | None = None, deadline: float = 60.0, process_group=None):
        if when_busy not in ("wait", "skip"):
            raise errors.InvalidArgument(f'when_busy must be "wait" or "skip", not {when_busy!r}')
        if keep_last < 0:
            raise errors.InvalidArgument(f"keep_last must be >= 0, not {keep_last}")
        self.root = os.fspath(root)
        self._options = {"keep_last": keep_last, "when_busy": when_busy, "staging_budget": staging_budget or 0,
                         "deadline_ms": int(deadline * 1000)}
        self._deadline = deadline
        self._group = None
        self._rank, self._size = 0, 1
        if dist.is_available() and dist.is_initialized():
            ranks = None if process_group is None else dist.get_process_group_ranks(process_group)
            self._group = dist.new_group(ranks=ranks, backend="gloo",
                                         timeout=datetime.timedelta(seconds=deadline))
            self._rank, self._size = dist.get_rank(self._group), dist.get_world_size(self._group)
        self._native = None
        self._layout = None
        self._items = None
        self._cuda_device: int | None = None  # the GPU the state's CUDA tensors lie on
        self._in_flight: list[tuple[Any, list]] = []  # (native handle, the tensors it reads)
        self._lock = threading.Lock()
        self._stopped = False

    # --- the first save's plan -----------------------------------------------------------

    def _plan(self, state: dict):
        """This rank's write items for ``state`` (DCP's planning), planned collectively the
        first time and kept."""
        planner = DefaultSavePlanner()
        planner.set_up_planner(state_dict=state, storage_meta=None, is_coordinator=self._rank == 0)
        local = planner.create_local_plan()
        layout = _layout(local.items)
        if self._layout is None:
            if self._group is None:
                plans, _ = planner.create_global_plan([local])
                final = plans[0]
            else:
                gathered = [None] * self._size if self._rank == 0 else None
                dist.gather_object(local, gathered, dst=dist.get_global_rank(self._group, 0), group=self._group)
                scattered = [None]
                plans = planner.create_global_plan(gathered)[0] if self._rank == 0 else None
                dist.scatter_object_list(scattered, plans, src=dist.get_global_rank(self._group, 0),
                                         group=self._group)
                final = scattered[0]
            self._layout = layout
            self._items = final.items
            self._stepped = _stepped_names([entry[0] for entry in layout])
        elif layout != self._layout:
            # The first entry that differs; past the shorter list, the first extra one.
            changed = next((a for a, b in zip(layout + [None], self._layout + [None]) if a != b))
            name = (changed or self._layout[len(layout)])[0]
            raise errors.InvalidArgument(
                f"the state's layout changed since the first save of this checkpointer (at {name}: "
                f"a tensor's shape, dtype or shard differs, or one was added or removed); make a new "
                f"AsyncCheckpointer for the new layout", context={"fqn": name})
        return planner

    # --- saves ---------------------------------------------------------------------------

    def async_save(self, step: int, state: dict) -> SaveHandle:
        """Starts a save of ``state`` as it is now; returns at once. Wait for
        ``handle.wait_snapshot()`` before the optimizer changes the state."""
        from corockpt import torch as ct  # the engine and the chunk descriptions
        with self._lock:
            if self._stopped:
                raise errors.Cancelled("the checkpointer is stopped")
            state = _flatten_state(state)
            planner = self._plan(state)
            # The memory of earlier saves that have ended may go.
            self._in_flight = [(h, t) for h, t in self._in_flight if not h.done()]
            chunks, objects, held = [], [], []
            for item in self._items:
                name = item.index.fqn
                data = planner.resolve_data(item)
                if item.type == WriteItemType.BYTE_IO:
                    objects.append((name, data.getvalue()))
                    continue
                tensor = data.detach()
                if tensor.device.type not in ("cpu", "cuda"):
                    raise errors.InvalidArgument(f"{name} lies on {tensor.device}: corockpt snapshots host and CUDA "
                                                 f"tensors", context={"fqn": name})
                if tensor.is_cuda:
                    if self._cuda_device is None:
                        self._cuda_device = tensor.device.index
                    elif tensor.device.index != self._cuda_device:
                        raise errors.InvalidArgument(
                            f"{name} lies on {tensor.device}, other tensors on cuda:{self._cuda_device}: one rank's "
                            f"state is on one GPU", context={"fqn": name})
                if not tensor.is_contiguous():
                    raise errors.InvalidArgument(
                        f"{name} is not contiguous: the snapshot copies tensors as they lie in memory "
                        f"(make it contiguous, or save it with dcp.save and ct.StorageWriter)", context={"fqn": name})
                ct._dtype_name(tensor, name)
                if name not in self._stepped:
                    # Captured now: the next forward may change it before the snapshot runs.
                    tensor = tensor.clone()
                held.append(tensor)  # alive until the save has ended, handle or not
                chunk = item.tensor_data.chunk
                chunks.append(ct._chunk(name, tensor, item.tensor_data.size, chunk.offsets, chunk.sizes))
            if self._native is None:
                self._native = self._create_native(chunks)
            user = json.dumps({"step": int(step), "writer": "corockpt.torch.AsyncCheckpointer"})
            native_handle = self._native.async_save(int(step), user, chunks, objects)
            self._in_flight.append((native_handle, held))
            return SaveHandle(native_handle)

    def _create_native(self, chunks):
        from corockpt import torch as ct
        channel = None
        if self._group is not None:
            from corockpt._channel import GlooChannel
            channel = GlooChannel(self._group)
        # CUDA tensors: snapshots copy them into pinned memory on corockpt's own stream,
        # ordered after the work queued on the stream current now (the loop's).
        device, stream = -1, 0
        if self._cuda_device is not None:
            device = self._cuda_device
            stream = torch.cuda.current_stream(device).cuda_stream
        return ct._get_engine().async_checkpointer(self.root, self._rank, self._size, channel, chunks,
                                                   self._options["keep_last"], self._options["when_busy"],
                                                   self._options["staging_budget"], self._options["deadline_ms"],
                                                   device, stream)

    def stop(self, timeout: float = 30.0) -> None:
        """Takes no more saves; waits up to ``timeout`` seconds for the one in flight, then
        abandons it (nothing of it commits; raises corockpt.Timeout). Raises the last save's
        error if it failed."""
        with self._lock:
            self._stopped = True
            native = self._native
        if native is not None:
            native.stop(timeout)

    def stats(self) -> dict:
        return self._native.stats() if self._native is not None else {}
