#pragma once
/// @file
/// What a SaveHandle shares with the save it watches (AsyncCheckpointer's run_save): the
/// two fences, the result and the figures, guarded by the save's own mutex.

#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>
#include <optional>

#include "corockpt/ckpt/async_checkpointer.hpp"
#include "corockpt/ckpt/detail/request_capture.hpp"
#include "corockpt/runtime/latch.hpp"
#include "corockpt/runtime/task_handle.hpp"

namespace corockpt::detail {

struct SaveState {
  /// `units`: how many per-unit fences (AsyncCheckpointer::step_order's size).
  explicit SaveState(std::size_t units) : unit_fences(units), unit_copied(units, false) {}

  /// Sets the whole-state fence and every unit fence not yet open, whose outcome is then
  /// snapshot_result (set it first).
  void open_snapshot() {
    for (auto& fence : unit_fences) fence.set();  // a Latch is thread-safe; set twice is a no-op
    snapshot.set();
  }
  /// Opens unit `unit`'s fence: its bytes are copied. (Latches are set outside `mutex`:
  /// what their waiters run may take it.)
  void open_unit(std::size_t unit) {
    if (unit >= unit_fences.size()) return;  // not one of the checkpointer's units
    {
      std::lock_guard lock(mutex);
      unit_copied[unit] = true;
    }
    unit_fences[unit].set();
  }

  std::int64_t step = 0;
  bool skipped = false;
  std::optional<Error> previous_failure;
  Latch snapshot;
  Latch finished;
  std::deque<Latch> unit_fences;  // a deque: a Latch cannot move
  std::mutex mutex;  // guards unit_copied and the three below
  std::vector<bool> unit_copied;  // opened by open_unit (else by open_snapshot)
  Result<void> snapshot_result;
  Result<SaveReport> result = fail(Errc::internal, "the save has not finished");
  SaveTimes times;
  TaskHandle<void> task;
  /// A checkpointer created from chunks: this save's own (SaveInputs), read by the save.
  std::vector<LocalChunk> chunks;
  std::vector<std::pair<std::string, std::string>> objects;
  /// What forward changes, copied when the save was requested (LocalChunk::at_request).
  RequestCapture captured;
};

}  // namespace corockpt::detail
