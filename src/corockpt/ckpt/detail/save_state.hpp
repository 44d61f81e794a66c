#pragma once
/// @file
/// What a SaveHandle shares with the save it watches (AsyncCheckpointer's run_save): the
/// two fences, the result and the figures, guarded by the save's own mutex.

#include <cstdint>
#include <mutex>
#include <optional>

#include "corockpt/ckpt/async_checkpointer.hpp"
#include "corockpt/runtime/latch.hpp"
#include "corockpt/runtime/task_handle.hpp"

namespace corockpt::detail {

struct SaveState {
  std::int64_t step = 0;
  bool skipped = false;
  std::optional<Error> previous_failure;
  Latch snapshot;
  Latch finished;
  std::mutex mutex;  // guards the three below
  Result<void> snapshot_result;
  Result<SaveReport> result = fail(Errc::internal, "the save has not finished");
  SaveTimes times;
  TaskHandle<void> task;
  /// A checkpointer created from chunks: this save's own (SaveInputs), read by the save.
  std::vector<LocalChunk> chunks;
  std::vector<std::pair<std::string, std::string>> objects;
};

}  // namespace corockpt::detail
