#pragma once
/// @file
/// `Communicator`: collectives and point-to-point transfers among the ranks of one group
/// (a mesh or a submesh), all awaitable. Implementations: `local` (ranks are coroutines
/// of one process, each on its own strand: the test double and the embedded default)
/// and `mpi` (OpenMPI, one process per rank).
///
/// Ordering rule (what keeps every backend deadlock-free): all ranks of a group issue
/// that group's operations in the same order. Operations on different groups may be in
/// flight at once; callers issue them in one global order (unit registration order) and
/// get overlap by not waiting between issues.
///
/// Deadlines: every operation completes within `CommOptions::deadline` or fails with
/// Errc::timeout naming the operation and the group; after a timeout the communicator
/// is broken and every later operation on it fails at once with Errc::unavailable
/// (never a hang). Buffers must stay valid until the operation's task ends; once it has
/// ended, with success or not, nothing writes into them any more.
///
/// Thread rules: a rank's communicator is used from that rank's coroutines, on its executor
/// (its strand when ranks share a runtime), one operation issued at a time in the group's
/// order; its operations may be in flight together. Communicators of different ranks or
/// groups are independent.
///
/// Arguments: sizes that disagree (a `recv` of the wrong size, `counts` that do not add
/// up, a root or peer out of range) are Errc::invalid_argument. The `local` backend checks
/// them at the rendezvous, so every rank of the collective fails alike; the `mpi` backend
/// can only check its own rank's, and then breaks that communicator (its peers are left
/// out of step and time out).

#include <chrono>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "corockpt/plugins/device/device.hpp"  // MemorySpace
#include "corockpt/runtime/task.hpp"

namespace corockpt {

struct CommOptions {
  /// How long one operation may take, counted from when this rank joins it.
  std::chrono::milliseconds deadline{std::chrono::seconds(120)};
  /// Test hook, 0 outside tests: every operation first waits this long on a timer and
  /// only then joins its collective (or transfer), as if the network were that slow.
  /// Not counted against `deadline`. Inherited by `split`'s groups. Tests use it to
  /// prove that operations on different groups overlap.
  std::chrono::milliseconds injected_latency{0};
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  /// This rank's index in the group, 0..size()-1.
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// "local", "mpi" or "nccl".
  virtual std::string_view backend() const = 0;
  /// The memory its operations move without a detour: `host` for local and mpi, `cuda`
  /// for nccl (which also takes host spans, staged through device memory: fine for a
  /// checkpoint's metadata, slow for bulk data). The collector gathers a model in device
  /// memory through device buffers when this is `cuda`, through host buffers otherwise.
  virtual MemorySpace memory_space() const = 0;
  /// For messages: e.g. "world", "world/split(2)".
  virtual const std::string& name() const = 0;

  /// Every rank sends `send` (the same size on all); `recv` (size() * send.size() bytes)
  /// receives them in rank order.
  virtual Task<void> all_gather(std::span<const std::byte> send, std::span<std::byte> recv) = 0;
  /// Variable sizes: rank i sends counts[i] bytes; they land in `recv` back to back in
  /// rank order. `counts` is the same on every rank; send.size() == counts[rank()].
  virtual Task<void> all_gather_v(std::span<const std::byte> send, std::span<std::byte> recv,
                                  std::span<const std::size_t> counts) = 0;
  /// Every rank sends counts[rank()] bytes to `root`, which receives them back to back
  /// in rank order in `recv` (ignored on the other ranks).
  virtual Task<void> gather_v(std::span<const std::byte> send, std::span<std::byte> recv,
                              std::span<const std::size_t> counts, int root) = 0;
  /// `root`'s `data` is copied into every other rank's `data` (same size everywhere).
  virtual Task<void> broadcast(std::span<std::byte> data, int root) = 0;
  virtual Task<void> barrier() = 0;
  /// Point-to-point, matched by (peer, tag) in issue order; `tag` >= 0 and at most
  /// 32767 (MPI's guaranteed minimum of MPI_TAG_UB). A send and its recv have the same
  /// size, else both fail with Errc::invalid_argument. A send may wait for its recv to
  /// be posted (`local` always does): issue the two sides of an exchange concurrently.
  virtual Task<void> send(std::span<const std::byte> data, int peer, int tag) = 0;
  virtual Task<void> recv(std::span<std::byte> data, int peer, int tag) = 0;

  /// All-to-all with variable sizes, a collective: this rank sends send_counts[p] bytes
  /// to every other rank p (from `send`, back to back in rank order) and receives
  /// recv_counts[p] bytes from every other rank p (into `recv`, likewise). A rank keeps
  /// its own part itself: both counts for it are 0. Rank p's send_counts[q] must be rank
  /// q's recv_counts[p]. `tag` (0..32767) keeps it apart from other point-to-point
  /// traffic of the group on backends that match by tag.
  /// The default issues one send and one recv per peer at once (right for `local` and
  /// `mpi`); `nccl` groups them (ncclGroupStart/End): its transfers run one after another
  /// on the communicator's stream, where two ranks each sending to the other first
  /// would wait for each other forever.
  /// @returns Errc::invalid_argument for counts that do not match the spans or the group.
  virtual Task<void> exchange(std::span<const std::byte> send, std::span<const std::size_t> send_counts,
                              std::span<std::byte> recv, std::span<const std::size_t> recv_counts, int tag);

  /// Collective over this group, like MPI_Comm_split: ranks passing the same `color`
  /// (>= 0) form a new group, ordered by (`key`, rank), named "<name>/split(<color>)".
  /// Call it on every rank of the group. The new group inherits this one's options.
  virtual Task<std::shared_ptr<Communicator>> split(int color, int key) = 0;
};

}  // namespace corockpt
