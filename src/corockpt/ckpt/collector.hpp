#pragma once
/// @file
/// The collector: PyTorch's `get_state_dict` on an FSDP / EP model, as awaitable tasks,
/// one per FSDP unit instance. Units on different groups progress together (their copies
/// into the gather buffers overlap), and every rank issues the units' collectives in one
/// global order, registration order, whatever order its copies complete in
/// (detail::IssueOrder), so no two ranks can deadlock, on NCCL either.

#include "corockpt/ckpt/model.hpp"
#include "corockpt/ckpt/state_dict.hpp"
#include "corockpt/runtime/task.hpp"

namespace corockpt {

/// This rank's state dict of `model` (call it on every rank, as a collective).
/// Sharded (the default): every param a DTensor shard, `Shard(0)` over its unit's group
/// (`flat` units need one all-gather of their slices to cut them into rows); buffers
/// plain tensors; optimizer states sharded like their params, Adam's `step` a 0-d
/// float32 tensor. `full_state_dict`: gathered full values. An optimizer that has not
/// stepped gets its state first, as PyTorch makes it (detail::initialize_optimizer_state).
/// The result's views point into the model's memory where no copy is needed (sharded
/// `per_param` units): it reflects later changes to the model, as PyTorch's does.
/// @returns Errc::invalid_argument for inconsistent options (experts_to_rank0 without
///   full_state_dict); the communicators' errors (timeouts) naming the unit.
///
/// A model in device memory (Model::move_to, or memory bound with Model::set_device)
/// gives values in that memory, owned by the state dict (`device_storage`) or views of
/// the model's; with `cpu_offload`, host copies. Gathers run in device buffers when the
/// unit's communicator moves device memory (nccl), in host buffers otherwise (staged
/// through the device), so every backend works.
///
/// Thread rules: a coroutine; every rank runs it on its own executor (its strand when
/// ranks share a runtime), one call per model at a time. The model's params must not
/// change while it runs (values are read until it completes), and the sharded result
/// views the model's memory, so read it before the next optimizer step or copy it.
Task<StateDict> get_state_dict(Model& model, StateDictOptions options = {});

/// A copy of `state` that owns all its memory, in host memory (PyTorch's cpu_offload
/// after the fact): device values are copied through `device` (may be null when there
/// are none), host ones copied too.
/// @returns the device's errors; Errc::invalid_argument for device values without a device.
Task<StateDict> state_dict_to_host(const StateDict& state, Device* device);

}  // namespace corockpt
