#pragma once
/// @file
/// `IssueOrder`: one rank's unit tasks issue their collectives in registration order,
/// whatever order their copies into the gather buffers complete in. NCCL needs every rank
/// to issue the collectives of communicators they share in one order; with a model in
/// device memory a unit first awaits its copies, and a unit with nothing to copy on some
/// rank would otherwise overtake there.
///
/// Unit i awaits `turn(i)`, then calls `pass(i)` and issues its collective at once (the
/// same step on its strand: the next unit resumes through the strand, after this one has
/// issued). The turn moves to the lowest index not yet passed, so a unit that issues
/// nothing, or fails, passes too and no later unit waits for it for ever.
///
/// Memory: nothing extra. Each unit keeps the buffers it held before; while it waits for
/// its turn it holds its packed send buffer, so at most every unit's send buffer is
/// packed at once (the sum of this rank's slices, as when every unit's copies ran
/// together without the order).
///
/// Not synchronised: every call on the strand of the rank's get_state_dict.

#include <cstddef>
#include <memory>
#include <vector>

#include "corockpt/runtime/latch.hpp"
#include "corockpt/runtime/task.hpp"

namespace corockpt::detail {

class IssueOrder {
 public:
  explicit IssueOrder(std::size_t units);

  /// Completes once every unit before `index` has passed (at once for the first).
  Task<void> turn(std::size_t index);
  /// Unit `index` has issued its collective, or issues none. Twice is harmless.
  void pass(std::size_t index);

 private:
  std::vector<bool> passed_;
  std::size_t next_ = 0;  // the lowest index not yet passed
  std::vector<std::unique_ptr<Latch>> turns_;
};

}  // namespace corockpt::detail
