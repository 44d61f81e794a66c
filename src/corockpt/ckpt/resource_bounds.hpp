#pragma once
/// @file
/// Bounds checked by the commands that build and allocate whole models (the CLI's save,
/// load and statedict, the training example) before they allocate, so that an impossible
/// request is a named error at once instead of memory growing until the machine gives
/// out. Planning-only tools (no model memory) do not apply them.

#include "corockpt/ckpt/model.hpp"
#include "corockpt/runtime/task.hpp"

namespace corockpt {

/// The most ranks one process runs as coroutines (the local backend). Far more than the
/// GPUs of one machine; a larger world is run one process per rank (mpirun), where each
/// process holds one rank's model and communicator state.
inline constexpr int max_ranks_in_process = 1024;

/// @returns Errc::invalid_argument naming both figures when `ranks` > max_ranks_in_process.
Result<void> check_ranks_in_process(int ranks);

/// A collective over `model.world()`, before `model.allocate()`: every rank's need (what
/// allocate will take) and its process's memory_headroom() are gathered; ranks of one
/// process (the same ProcessId) add their needs up. Every rank then fails alike when any
/// process lacks the memory, so none allocates and none waits on another.
/// @returns Errc::no_memory naming the process's ranks, its need, its headroom and where
///   that limit comes from, and this rank's largest tensor; the communicator's errors.
Task<void> check_memory_before_allocating(const Model& model);

}  // namespace corockpt
