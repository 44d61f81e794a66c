#pragma once
/// @file
/// What the `mpi` and `nccl` communicators share: an operation as the caller asked for it
/// (`Plan`), its description for messages, the checks of its root, peer and tag, and
/// `PlannedCommunicator`, which turns every Communicator call into a Plan for the
/// backend's `run`.

#include <cstddef>
#include <span>
#include <string>

#include "corockpt/plugins/comm/communicator.hpp"

namespace corockpt::comm_detail {

/// MPI's guaranteed minimum of MPI_TAG_UB; every backend accepts tags 0..max_tag.
inline constexpr int max_tag = 32767;

enum class OpKind { all_gather, all_gather_v, gather_v, broadcast, barrier, send, recv, split, exchange };

inline std::string to_string(OpKind kind) {
  switch (kind) {
    case OpKind::all_gather: return "all_gather";
    case OpKind::all_gather_v: return "all_gather_v";
    case OpKind::gather_v: return "gather_v";
    case OpKind::broadcast: return "broadcast";
    case OpKind::barrier: return "barrier";
    case OpKind::send: return "send";
    case OpKind::recv: return "recv";
    case OpKind::split: return "split";
    case OpKind::exchange: return "exchange";
  }
  return "operation";
}

/// One operation as the caller asked for it.
struct Plan {
  OpKind kind = OpKind::barrier;
  std::span<const std::byte> send;
  std::span<std::byte> recv;
  std::span<const std::size_t> counts;  ///< exchange: the send counts
  std::span<const std::size_t> recv_counts;  ///< exchange only
  int root = -1;
  int peer = -1;
  int tag = 0;
};

/// "send on world/split(1) to rank 3 (tag 7)".
inline std::string describe(const Plan& plan, const std::string& group) {
  std::string what = to_string(plan.kind) + " on " + group;
  if (plan.kind == OpKind::send) what += " to rank " + std::to_string(plan.peer);
  if (plan.kind == OpKind::recv) what += " from rank " + std::to_string(plan.peer);
  if (plan.kind == OpKind::send || plan.kind == OpKind::recv) what += " (tag " + std::to_string(plan.tag) + ")";
  return what;
}

/// @returns Errc::invalid_argument, prefixed by `what`, for a root, peer or tag out of
///   range in a group of `size` ranks.
inline Result<void> check_addressing(const Plan& plan, int size, const std::string& what) {
  auto invalid = [&what](const std::string& why) { return fail(Errc::invalid_argument, what + ": " + why); };
  if ((plan.kind == OpKind::gather_v || plan.kind == OpKind::broadcast) && (plan.root < 0 || plan.root >= size)) {
    return invalid("root " + std::to_string(plan.root) + " is outside 0.." + std::to_string(size - 1));
  }
  if (plan.kind == OpKind::send || plan.kind == OpKind::recv) {
    if (plan.peer < 0 || plan.peer >= size) return invalid("no such rank in a group of " + std::to_string(size));
    if (plan.tag < 0 || plan.tag > max_tag) return invalid("tags are 0.." + std::to_string(max_tag));
  }
  return {};
}

/// @returns Errc::invalid_argument, prefixed by `what`, when an exchange's counts do not
///   fit its spans, the group of `size` ranks, or rank `rank`'s own part (which is 0).
Result<void> check_exchange(std::span<const std::byte> send, std::span<const std::size_t> send_counts,
                            std::span<std::byte> recv, std::span<const std::size_t> recv_counts, int size, int rank,
                            int tag, const std::string& what);

/// A communicator whose operations all go through one `run(Plan)`.
class PlannedCommunicator : public Communicator {
 public:
  Task<void> all_gather(std::span<const std::byte> send, std::span<std::byte> recv) final {
    return run({.kind = OpKind::all_gather, .send = send, .recv = recv});
  }
  Task<void> all_gather_v(std::span<const std::byte> send, std::span<std::byte> recv,
                          std::span<const std::size_t> counts) final {
    return run({.kind = OpKind::all_gather_v, .send = send, .recv = recv, .counts = counts});
  }
  Task<void> gather_v(std::span<const std::byte> send, std::span<std::byte> recv, std::span<const std::size_t> counts,
                      int root) final {
    return run({.kind = OpKind::gather_v, .send = send, .recv = recv, .counts = counts, .root = root});
  }
  Task<void> broadcast(std::span<std::byte> data, int root) final {
    return run({.kind = OpKind::broadcast, .recv = data, .root = root});
  }
  Task<void> barrier() final { return run({.kind = OpKind::barrier}); }
  Task<void> send(std::span<const std::byte> data, int peer, int tag) final {
    return run({.kind = OpKind::send, .send = data, .peer = peer, .tag = tag});
  }
  Task<void> recv(std::span<std::byte> data, int peer, int tag) final {
    return run({.kind = OpKind::recv, .recv = data, .peer = peer, .tag = tag});
  }

 protected:
  virtual Task<void> run(Plan plan) = 0;
};

}  // namespace corockpt::comm_detail
