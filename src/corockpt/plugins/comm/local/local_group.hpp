#pragma once
/// @file
/// `LocalGroup`: what the ranks of one `local` group share. Collectives meet by sequence
/// number (every rank numbers its collectives on the group 0, 1, 2, ... in issue order,
/// which the ordering rule makes the same order on every rank); transfers are matched
/// by (source, destination, tag) in posting order. The group is also where a timeout
/// breaks every rank's communicator at once.
///
/// Thread-safe: one mutex guards everything, and all copies happen under it, between
/// the moment the last rank arrives and the moment the ranks' waits are completed. A
/// rank that gives up removes itself under the same mutex, so nothing is ever copied
/// into its buffers after it has stopped waiting.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "corockpt/plugins/comm/local/local_collectives.hpp"
#include "corockpt/runtime/completion.hpp"
#include "corockpt/runtime/error.hpp"

namespace corockpt::local_comm {

class LocalGroup {
 public:
  /// @param world_ranks the world rank of each member, in group rank order.
  LocalGroup(std::string name, std::vector<int> world_ranks);

  const std::string& name() const { return name_; }
  int size() const { return static_cast<int>(world_ranks_.size()); }
  int world_rank(int rank) const { return world_ranks_.at(static_cast<std::size_t>(rank)); }

  /// Takes `rank`'s next sequence number: the collective it is issuing now.
  /// @returns Errc::unavailable when the group is broken.
  Result<std::uint64_t> next_sequence(int rank);

  /// Hands in `rank`'s part of collective `sequence`. The last rank to arrive carries
  /// the collective out and completes every rank's `done`. In a broken group `done` is
  /// completed at once with Errc::unavailable.
  void arrive(std::uint64_t sequence, int rank, Contribution contribution);

  /// `rank` stops waiting for collective `sequence` (its deadline passed, or it was
  /// cancelled). The collective can then never complete: the ranks already waiting in it
  /// fail with `why`'s code, every other operation pending on the group fails with
  /// Errc::unavailable, and so does every later one (the group is broken).
  /// @returns `why`, its message completed with the ranks that had not arrived (the same
  ///   message for every rank that gives up on that collective).
  Error give_up(std::uint64_t sequence, int rank, Error why);

  /// Posts a send (from `from` to `to`) or a recv (at `to` from `from`): matched with the
  /// oldest opposite one of the same (from, to, tag), the bytes are copied and both
  /// `done`s completed. A size mismatch fails both with Errc::invalid_argument.
  /// @returns an id for `give_up_transfer`.
  std::uint64_t post_send(int from, int to, int tag, std::span<const std::byte> data,
                          std::shared_ptr<Completion<void>> done);
  std::uint64_t post_recv(int from, int to, int tag, std::span<std::byte> data,
                          std::shared_ptr<Completion<void>> done);

  /// Like `give_up`, for a send or recv still waiting for its match.
  Error give_up_transfer(std::uint64_t id, Error why);

 private:
  struct Rendezvous {
    std::vector<std::optional<Contribution>> arrived;  // by rank
    int count = 0;
  };
  struct Transfer {
    std::uint64_t id = 0;
    std::span<const std::byte> send;  // a send's data
    std::span<std::byte> recv;        // a recv's buffer
    std::shared_ptr<Completion<void>> done;
  };
  using Route = std::tuple<int, int, int>;  // from, to, tag

  Error broken_error() const;
  std::string rank_list(const std::vector<int>& ranks) const;
  void break_group(const Error& why);
  static void match(Transfer& send, Transfer& recv, const Route& route);

  const std::string name_;
  const std::vector<int> world_ranks_;

  std::mutex mutex_;
  std::optional<Error> broken_because_;
  std::uint64_t broken_at_sequence_ = 0;  // the collective whose abandonment broke the group
  std::vector<std::uint64_t> next_sequence_;  // by rank
  std::map<std::uint64_t, Rendezvous> collectives_;
  std::map<Route, std::deque<Transfer>> unmatched_sends_;
  std::map<Route, std::deque<Transfer>> unmatched_recvs_;
  std::uint64_t next_transfer_id_ = 1;
};

}  // namespace corockpt::local_comm
