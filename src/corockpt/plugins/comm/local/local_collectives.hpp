#pragma once
/// @file
/// What one rank brings to a collective of the `local` backend (`Contribution`), and
/// what happens once every rank of the group has brought its own: the arguments are
/// checked against each other and the bytes are copied between the ranks' buffers.

#include <cstddef>
#include <memory>
#include <span>
#include <string_view>

#include "corockpt/runtime/completion.hpp"
#include "corockpt/runtime/error.hpp"

namespace corockpt::local_comm {

class LocalGroup;

enum class CollectiveKind { all_gather, all_gather_v, gather_v, broadcast, barrier, split };

/// "all_gather", "barrier", ...: how operations are named in messages and traces.
std::string_view to_string(CollectiveKind kind);

/// Where a rank lands after a split: its new group and its rank in it.
struct SplitOutcome {
  std::shared_ptr<LocalGroup> group;
  int rank = -1;
};

/// One rank's part in a collective. The spans point into the caller's buffers, which
/// stay valid while the caller waits for the collective.
struct Contribution {
  CollectiveKind kind = CollectiveKind::barrier;
  std::span<const std::byte> send;
  std::span<std::byte> recv;            ///< all_gather(_v), gather_v at the root, broadcast's data
  std::span<const std::size_t> counts;  ///< all_gather_v, gather_v
  int root = -1;                        ///< gather_v, broadcast
  int color = 0;                        ///< split
  int key = 0;                          ///< split
  SplitOutcome* split_outcome = nullptr;
  /// Filled once the collective is over (or has failed) for this rank.
  std::shared_ptr<Completion<void>> done;
};

/// Checks the contributions (one per rank, in rank order) against each other and
/// carries the collective out: copies the bytes, or makes the split's groups.
/// All checks happen here, where every rank's arguments are known, so a mistake on one
/// rank fails the collective on all of them alike and the group stays in step.
/// @returns Errc::invalid_argument naming the rank and the mismatch; nothing is copied then.
Result<void> carry_out(std::span<Contribution> contributions, const LocalGroup& group);

}  // namespace corockpt::local_comm
