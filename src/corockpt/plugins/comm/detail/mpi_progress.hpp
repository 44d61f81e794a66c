#pragma once
/// @file
/// `MpiProgress`: the one progress poller of the process (internal to the mpi plugin; it
/// polls with the back-off of backoff.hpp, beside it).
/// MPI offers nothing to wait on, so every started request is handed to it, and a
/// coroutine on the runtime's io_context tests them all with MPI_Testsome, sleeping
/// between rounds with back-off (20 µs, doubling up to 2 ms while nothing finishes).
/// It runs only while some request is awaited: no thread spins on a core, and with
/// nothing in flight no timer is even armed.

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>

#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "corockpt/plugins/comm/mpi/mpi_library.hpp"
#include "corockpt/runtime/completion.hpp"

namespace corockpt::mpi_detail {

/// One started MPI request and everything MPI may still read or write until it is
/// complete. MPI only ever touches `staging`, never the caller's buffers: a request
/// abandoned at a deadline cannot be cancelled (MPI has no cancel for collectives), so it
/// keeps its staging with it and the caller's memory is free the moment it stops waiting.
struct MpiOperation {
  std::string what;  ///< "all_gather on world": for errors
  std::shared_ptr<const OwnedComm> comm;  ///< not freed while the request is pending
  MPI_Request request = MPI_REQUEST_NULL;
  std::unique_ptr<std::byte[]> staging;
  std::vector<int> counts;         ///< a v-collective's arrays, which MPI reads until completion
  std::vector<int> displacements;
  std::span<const std::byte> result;  ///< part of `staging` copied to `destination` on success
  std::span<std::byte> destination;   ///< the caller's buffer
  std::optional<std::size_t> expected_bytes;  ///< a recv checks the size of what arrived
  std::shared_ptr<Completion<void>> done = Completion<void>::make();

  // Guarded by MpiProgress's mutex.
  bool abandoned = false;
  std::optional<Result<void>> outcome;

  /// Allocates `bytes` of staging (uninitialised) and returns it.
  std::byte* stage(std::size_t bytes);
};

class MpiProgress {
 public:
  static MpiProgress& instance();

  /// Starts watching an operation whose request has been started. When MPI completes it,
  /// the result is copied to the caller's buffer and `done` completed. If the poller is
  /// not running, it starts on `executor` (the runtime's io_context: single-threaded).
  void watch(std::shared_ptr<MpiOperation> operation, asio::any_io_executor executor);

  /// The caller stopped waiting (deadline or cancellation). From now on nothing is copied
  /// into its buffers; the request stays with MPI and is still tested, so its staging is
  /// freed if it ever completes, but it no longer keeps the poller running.
  /// @returns the outcome instead, if the operation had already finished.
  std::optional<Result<void>> abandon(const std::shared_ptr<MpiOperation>& operation);

  /// Tests the abandoned requests once. @returns how many MPI has still not completed.
  std::size_t abandoned_pending();

  /// Frees the staging of abandoned requests; only once MPI is finalized.
  void forget_abandoned();

  using Operations = std::vector<std::shared_ptr<MpiOperation>>;

 private:
  struct Round {
    bool progressed = false;   // some request completed
    bool keep_going = false;   // some watched request is still pending
  };

  MpiProgress() = default;
  asio::awaitable<void> poll_loop();
  /// @param finished receives the operations done with, to be destroyed by the caller
  ///   after the locks are released (destroying one may free its communicator).
  Round poll_once(Operations& finished);
  void finish(MpiOperation& operation, int error, const MPI_Status& status);
  void wake_up();

  std::mutex mutex_;
  Operations watched_;
  Operations abandoned_;
  bool running_ = false;
  asio::any_io_executor loop_executor_;
  asio::steady_timer* sleeping_on_ = nullptr;  // the loop's timer; used on loop_executor_ only
};

}  // namespace corockpt::mpi_detail
