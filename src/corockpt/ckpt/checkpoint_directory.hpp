#pragma once
/// @file
/// A directory of checkpoints, one per step: `<root>/step-<8-digit step>`. `latest`
/// finds the newest complete one; retention deletes older ones only after a newer one
/// has committed. Partial saves (`*.tmp-*`) and directories without metadata are never
/// "latest"; retention leaves partial saves of newer steps, and any whose save is alive
/// (it holds the directory's lock), alone.

#include <cstdint>
#include <optional>
#include <string>

#include "corockpt/ckpt/checkpoint_io.hpp"

namespace corockpt {

/// "step-00000100".
std::string step_checkpoint_name(std::int64_t step);

struct FoundCheckpoint {
  std::string path;
  std::int64_t step = 0;
};

/// The complete checkpoint of the highest step under `root`; nullopt if there is none
/// (or no `root`).
Task<std::optional<FoundCheckpoint>> latest_checkpoint(CheckpointIo io, std::string root);

/// Deletes the complete checkpoints under `root` other than the newest `keep_last`, and
/// partial ones (`step-N.tmp-*`) of steps older than the newest complete one (debris of
/// interrupted saves) that nobody owns: each is locked first (temporary_directory.hpp),
/// and one whose lock another process or save holds is left alone. Where the storage
/// cannot lock directories, the step order alone decides. `keep_last` >= 1.
/// @returns how many directories it removed, or the first removal error.
Task<int> remove_old_checkpoints(CheckpointIo io, std::string root, int keep_last);

}  // namespace corockpt
