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
  timeout is the checkpointer's deadline;
- units, for loops that step part of the state at a time (per param group, or in
  backward): given the model, every tensor of the state sits behind the snapshot fence of
  its unit (see ``_model_units``) and ``handle.wait_snapshot(params)`` waits for the units
  of ``params`` only.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
from typing import Any, Iterable

import torch
import torch.distributed as dist
import torch.nn as nn
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


def _param_fqn(name: str, fqns) -> str | None:
    """The model FQN (one of ``fqns``) a flattened state key belongs to: ``<o>.state.<fqn>.<s>``
    for an optimizer state, else the longest dotted suffix of ``name`` that is an FQN
    (``model.<fqn>``, or ``<fqn>`` for a model's state dict saved as it is); None when none
    is."""
    _, sep, rest = name.partition(".state.")
    if sep and "." in rest and rest.rsplit(".", 1)[0] in fqns:
        return rest.rsplit(".", 1)[0]
    parts = name.split(".")
    for start in range(len(parts)):
        suffix = ".".join(parts[start:])
        if suffix in fqns:
            return suffix
    return None


# Wrappers whose attribute names show in named_parameters() but never in state dict keys.
_WRAPPER_NAMES = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")


def _model_units(model: nn.Module) -> tuple[list[str], dict[str, int], dict[int, list[str]]]:
    """The units of ``model``: each module ``fully_shard`` made an FSDP unit (an
    ``FSDPModule``) is one, holding its params and buffers except those of the units
    nested in it, and the root is unit 0, holding the rest (its own params, or everything
    when nothing is sharded). Numbered in module order (pre-order, as ``named_modules``
    lists them: the root first, then sharded modules as they are declared). Create the
    checkpointer after ``fully_shard``: it replaces the params.

    Why FSDP units: they are what the loop steps together (FSDP2 all-gathers, reduces and
    frees a unit's params as one, and an optimizer in backward steps a unit once its
    gradients are reduced), so a unit's fence opening lets exactly that step run while the
    snapshot copies the next; finer units would add fences no loop waits on one by one.

    @returns (each unit's module FQN, "" for the root), the unit of every param and buffer
    FQN (state dict names: wrapper prefixes dropped), and the FQNs of every param by its
    id (a tied param has several)."""
    from torch.distributed.fsdp import FSDPModule

    modules, unit_of, fqns_of = [""], {}, {}

    def clean(prefix: str) -> str:
        return ".".join(part for part in prefix.split(".") if part not in _WRAPPER_NAMES)

    def visit(module: nn.Module, prefix: str, unit: int) -> None:
        for name, param in module.named_parameters(prefix=prefix, recurse=False):
            unit_of.setdefault(clean(name), unit)
            fqns_of.setdefault(id(param), []).append(clean(name))
        for name, buffer in module.named_buffers(prefix=prefix, recurse=False):
            unit_of.setdefault(clean(name), unit)
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if isinstance(child, FSDPModule):
                modules.append(clean(path))
                visit(child, path, len(modules) - 1)
            else:
                visit(child, path, unit)

    visit(model, "", 0)
    return modules, unit_of, fqns_of


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's memory on this rank: a DTensor's local shard, a tensor itself."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


def _describe(tensor: torch.Tensor) -> str:
    return f"a tensor of shape {tuple(tensor.shape)}, {tensor.dtype}, on {tensor.device}"


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
    """One save: the fences and the outcome. ``wait_snapshot()`` before the optimizer step
    that follows ``async_save`` (or ``wait_snapshot(params)`` before stepping ``params``
    only); ``result()`` is None or raises the save's corockpt.Error."""

    def __init__(self, native, checkpointer: "AsyncCheckpointer | None" = None, addresses: dict | None = None):
        self._native = native
        self._checkpointer = checkpointer
        self._addresses = addresses or {}  # the state's tensors at the request: keys by data_ptr

    def _units(self, params) -> list[int]:
        """The units of ``params`` this save has fences for, in the checkpointer's step order."""
        units = self._checkpointer._units_of(params, self._addresses)
        count = self._native.unit_count  # units past it have no chunk on this rank: nothing to wait for
        return [unit for unit in self._checkpointer._step_order if unit in units and unit < count]

    @property
    def step(self) -> int:
        return self._native.step

    @property
    def skipped(self) -> bool:
        """Requested while a save ran, with ``when_busy="skip"``: nothing was saved."""
        return self._native.skipped

    def wait_snapshot(self, params: Iterable | None = None) -> None:
        """Blocks until the state is copied: from then on the optimizer may update it.

        ``params``: only the units holding these (torch params or tensors of the state, a
        DTensor or its local shard, or their FQNs / state keys; a module's
        ``parameters()``) are waited for: from then on the optimizer may update them and
        their optimizer states, while the snapshot copies the other units. Raises
        ``corockpt.InvalidArgument`` (a ValueError) naming one that is not in the
        checkpointed state. Both forms add the time blocked to ``stall_seconds()``."""
        if params is None:
            self._native.wait_snapshot()
        else:
            self._native.wait_units(self._units(params))

    def snapshot_ready(self, params: Iterable | None = None) -> bool:
        """Whether ``wait_snapshot(params)`` would return at once."""
        if params is None:
            return self._native.snapshot_ready()
        return self._native.units_ready(self._units(params))

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
    streams the state through a pool of that many bytes, at least 8 KiB, unit by unit, and
    a unit's fence opens once its bytes are in the pool: the stall grows by what the
    budget cannot hold). ``deadline``: seconds
    one exchange between ranks may take before the save fails (and the channel with it).

    ``model``: the ``nn.Module`` whose state (and optimizer state, by the same FQNs, as
    ``get_state_dict`` gives it) is saved; its units (``unit_modules``: the root, then
    every ``fully_shard``-ed module) get a snapshot fence each, so a loop that steps unit
    by unit waits for the unit it steps only (``handle.wait_snapshot(params)``). Without
    it the state is one unit. ``step_order``: the order the loop steps the units, each
    once (default ascending): the snapshot copies them in that order.
    """

    def __init__(self, root: str | os.PathLike, *, keep_last: int = 0, when_busy: str = "wait",
                 staging_budget: int | None = None, deadline: float = 60.0, process_group=None,
                 model: nn.Module | None = None, step_order: Iterable[int] | None = None):
        if when_busy not in ("wait", "skip"):
            raise errors.InvalidArgument(f'when_busy must be "wait" or "skip", not {when_busy!r}')
        if keep_last < 0:
            raise errors.InvalidArgument(f"keep_last must be >= 0, not {keep_last}")
        if model is not None:
            self._unit_modules, self._unit_of_fqn, self._fqns_of_param = _model_units(model)
        else:
            self._unit_modules, self._unit_of_fqn, self._fqns_of_param = [""], {}, {}
        units = len(self._unit_modules)
        self._step_order = list(range(units)) if step_order is None else [int(u) for u in step_order]
        if sorted(self._step_order) != list(range(units)):
            raise errors.InvalidArgument(f"step_order must name each of the {units} units (0..{units - 1}) once, "
                                         f"not {self._step_order}")
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
        self._unit_of_key: dict[str, int] = {}  # every tensor key of the state: its unit
        self._last_addresses: dict[int, list[str]] = {}  # the last save's, for unit_of
        self._keys_of_fqn: dict[str, list[str]] = {}  # the keys of each param FQN (param, states)
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
            stepped = _stepped_names([entry[0] for entry in layout])
            # Refused (every rank alike) before anything of the plan is kept.
            self._unit_of_key, self._keys_of_fqn = self._place([e[0] for e in layout if e[1] != "bytes"], stepped)
            self._layout = layout
            self._items = final.items
            self._stepped = stepped
        elif layout != self._layout:
            # The first entry that differs; past the shorter list, the first extra one.
            changed = next((a for a, b in zip(layout + [None], self._layout + [None]) if a != b))
            name = (changed or self._layout[len(layout)])[0]
            raise errors.InvalidArgument(
                f"the state's layout changed since the first save of this checkpointer (at {name}: "
                f"a tensor's shape, dtype or shard differs, or one was added or removed); make a new "
                f"AsyncCheckpointer for the new layout", context={"fqn": name})
        return planner

    def _place(self, keys: list[str], stepped: set[str]) -> tuple[dict[str, int], dict[str, list[str]]]:
        """Every tensor key's unit: the unit of the model FQN it belongs to (a param, a
        buffer, an optimizer state of a param). Keys of no FQN (a tensor outside the model)
        sit in unit 0: they are not stepped, so captured at the request anyway; an
        optimizer state or stepped param of no FQN of the model is refused when there are
        units to place it in, since no fence would then guard its step.
        @returns each key's unit, and the keys of each FQN."""
        unit_of_key, keys_of_fqn = {}, {}
        fqns = self._unit_of_fqn
        if not fqns:  # no model: the stepped params' own FQNs, for wait_snapshot(names)
            fqns = {name.partition(".state.")[2].rsplit(".", 1)[0]: 0 for name in keys if ".state." in name}
        for key in keys:
            fqn = _param_fqn(key, fqns)
            if fqn is None and key in stepped and len(self._unit_modules) > 1:
                raise errors.InvalidArgument(
                    f"{key}: the optimizer steps it, but it belongs to no param of the model given to the "
                    f"checkpointer, so no unit's fence guards it (key the state by the model's FQNs, as "
                    f"get_state_dict does)", context={"fqn": key})
            unit_of_key[key] = fqns.get(fqn, 0)
            if fqn is not None:
                keys_of_fqn.setdefault(fqn, []).append(key)
        return unit_of_key, keys_of_fqn

    def _units_of(self, params, addresses: dict) -> set[int]:
        """The units of ``params`` (see SaveHandle.wait_snapshot); ``addresses``: a save's
        state keys by their tensors' data_ptr."""
        if isinstance(params, (torch.Tensor, str)):
            params = [params]
        units = set()
        for param in params:
            if isinstance(param, str):
                keys = [param] if param in self._unit_of_key else self._keys_of_fqn.get(param)
                if not keys:
                    raise errors.InvalidArgument(f"{param} is not in the checkpointed state (neither a key of it "
                                                 f"nor the FQN of a param in it)", context={"fqn": param})
            elif isinstance(param, torch.Tensor):
                fqns = self._fqns_of_param.get(id(param))
                if fqns is not None:
                    keys = [key for fqn in fqns for key in self._keys_of_fqn.get(fqn, ())]
                    if not keys:
                        raise errors.InvalidArgument(f"{fqns[0]} is a param of the model but not in the "
                                                     f"checkpointed state", context={"fqn": fqns[0]})
                else:
                    local = _local(param)
                    if local.numel() == 0:
                        continue  # no bytes on this rank (an empty shard): nothing to guard
                    keys = addresses.get(local.data_ptr())
                    if not keys:
                        raise errors.InvalidArgument(f"{_describe(param)} is not in the checkpointed state (not a "
                                                     f"param of the model, nor the memory of a tensor saved)")
            else:
                raise errors.InvalidArgument(f"wait_snapshot takes torch tensors or FQNs, not {type(param).__name__}")
            units.update(self._unit_of_key.get(key, 0) for key in keys)
        return units

    @property
    def step_order(self) -> list[int]:
        """The units in the order the snapshot copies them and the loop steps them."""
        return list(self._step_order)

    @property
    def unit_modules(self) -> list[str]:
        """Each unit's module, by FQN ("" for the root); one unit without a model."""
        return list(self._unit_modules)

    def unit_of(self, param) -> int:
        """The unit of ``param`` (a tensor or an FQN, as ``wait_snapshot`` takes them); a
        param tied into several units: the first in the step order. Before the first save
        only the model's params and FQNs are known."""
        if self._layout is None:
            fqns = [param] if isinstance(param, str) else self._fqns_of_param.get(id(param), [])
            units = {self._unit_of_fqn[fqn] for fqn in fqns if fqn in self._unit_of_fqn}
            if not units:
                name = param if isinstance(param, str) else _describe(param)
                raise errors.InvalidArgument(f"{name} is not a param or buffer of the checkpointer's model (before "
                                             f"the first save, the state is not known yet)")
        else:
            units = self._units_of(param, self._last_addresses)
        return next(unit for unit in self._step_order if unit in units)

    # --- saves ---------------------------------------------------------------------------

    def async_save(self, step: int, state: dict) -> SaveHandle:
        """Starts a save of ``state`` as it is now; returns at once. Wait for
        ``handle.wait_snapshot()`` before the optimizer changes the state (or for
        ``handle.wait_snapshot(params)`` before it changes ``params``)."""
        from corockpt import torch as ct  # the engine and the chunk descriptions
        with self._lock:
            if self._stopped:
                raise errors.Cancelled("the checkpointer is stopped")
            state = _flatten_state(state)
            planner = self._plan(state)
            # The memory of earlier saves that have ended may go.
            self._in_flight = [(h, t) for h, t in self._in_flight if not h.done()]
            # Every tensor of the state by its memory (this rank's, written here or not),
            # to tell which keys a tensor given to wait_snapshot is.
            addresses: dict[int, list[str]] = {}
            for name, value in planner.state_dict.items():
                if isinstance(value, torch.Tensor):
                    local = _local(value)
                    if local.numel() > 0:
                        addresses.setdefault(local.data_ptr(), []).append(name)
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
                chunks.append(ct._chunk(name, tensor, item.tensor_data.size, chunk.offsets, chunk.sizes,
                                        self._unit_of_key.get(name, 0)))
            if self._native is None:
                self._native = self._create_native(chunks)
            user = json.dumps({"step": int(step), "writer": "corockpt.torch.AsyncCheckpointer"})
            native_handle = self._native.async_save(int(step), user, chunks, objects)
            self._in_flight.append((native_handle, held))
            self._last_addresses = addresses
            return SaveHandle(native_handle, self, addresses)

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
        # The engine's units are those up to the last one this rank has a chunk of (a rank
        # may hold none of the trailing ones: experts elsewhere); the others have no fence.
        present = 1 + max((chunk[-1] for chunk in chunks), default=-1)
        order = [unit for unit in self._step_order if unit < present]
        return ct._get_engine().async_checkpointer(self.root, self._rank, self._size, channel, chunks,
                                                   self._options["keep_last"], self._options["when_busy"],
                                                   self._options["staging_budget"], self._options["deadline_ms"],
                                                   device, stream, order)

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
