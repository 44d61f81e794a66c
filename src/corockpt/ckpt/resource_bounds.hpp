#pragma once
/// @file
/// Bounds checked by the commands that build and allocate whole models (the CLI's save,
/// load and statedict, the training example) before they allocate, so that an impossible
/// request is a named error at once instead of memory growing until the machine gives
/// out. Planning-only tools (no model memory) do not apply them.

#include <optional>
#include <span>
#include <string>

#include "corockpt/ckpt/model.hpp"
#include "corockpt/runtime/process_id.hpp"
#include "corockpt/runtime/task.hpp"

namespace corockpt {

/// The most ranks one process runs as coroutines (the local backend). Far more than the
/// GPUs of one machine; a larger world is run one process per rank (mpirun), where each
/// process holds one rank's model and communicator state.
inline constexpr int max_ranks_in_process = 1024;

/// @returns Errc::invalid_argument naming both figures when `ranks` > max_ranks_in_process.
Result<void> check_ranks_in_process(int ranks);

/// A collective over `model.world()`, before `model.allocate()`: every rank's need (what
/// allocate will take) and its process's memory_headroom() are gathered. Ranks of one
/// process (the same ProcessId) add their needs up against that process's headroom, and
/// the processes of one machine add theirs up against its MemAvailable (ranks under
/// mpirun on one host share it). Every rank then fails alike when any process or machine
/// lacks the memory, so none allocates and none waits on another.
/// @returns Errc::no_memory naming the ranks, the need, the memory there is and where that
///   limit comes from, and this rank's largest tensor; the communicator's errors.
Task<void> check_memory_before_allocating(const Model& model);

namespace detail {

/// What each rank tells the others (sent as bytes: no padding).
struct RankMemory {
  ProcessId process;
  std::uint64_t need = 0;               ///< what Model::allocate will take on this rank
  std::uint64_t headroom = 0;           ///< memory_headroom().bytes of its process
  std::uint64_t machine_available = 0;  ///< memory_headroom().machine_available
};

/// The first process, then the first machine, whose ranks' needs exceed what it has
/// (every rank finds the same one), described for an error message from the point of
/// view of `me`; nullopt when everything fits.
std::optional<std::string> memory_shortfall(std::span<const RankMemory> ranks, const ProcessId& me);

}  // namespace detail

}  // namespace corockpt
