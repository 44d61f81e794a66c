#pragma once
/// @file
/// The MPI library as corockpt uses it (internal: includes mpi.h, so only the mpi
/// plugin's .cpp files include it): initialization once per process, the lock every MPI
/// call is made under, and MPI error codes turned into `Error`s.

#include <mpi.h>

#include <chrono>
#include <mutex>
#include <string_view>

#include "corockpt/runtime/error.hpp"

namespace corockpt::mpi_detail {

/// Held around every MPI call. MPI is initialized with MPI_THREAD_SERIALIZED: calls may
/// come from any thread (the caller of make_mpi_world, the runtime's io thread) but never
/// two at once, and this lock is what makes "never two at once" true.
std::unique_lock<std::mutex> lock_mpi();

/// Initializes MPI the first time (MPI_Init_thread asking for MPI_THREAD_SERIALIZED), or
/// checks the thread level of an MPI the program initialized itself. Call it holding
/// `lock_mpi()`.
///
/// MPI_Init_thread returns only when every process of the job has called it, so a process
/// that died before it would block it for ever. It runs on a thread of its own, MPI's main
/// thread from then on (it also runs MPI_Finalize, as the standard asks), and the caller
/// waits for it up to `deadline`. An initialization abandoned at its deadline stays
/// abandoned: that thread may never return, and MPI is unusable in this process.
/// @returns Errc::timeout at the deadline; Errc::unavailable when MPI cannot be
///   initialized, is already finalized, was abandoned, or grants less than
///   MPI_THREAD_SERIALIZED.
Result<void> ensure_initialized(std::chrono::milliseconds deadline);

/// True once MPI_Finalize has run (after which no MPI call is allowed). Call it holding
/// `lock_mpi()`.
bool finalized();

/// Finalizes MPI if ensure_initialized initialized it (a program that initialized MPI
/// itself also finalizes it), on the thread that initialized it. Call it holding
/// `lock_mpi()`. MPI_Finalize may wait for the other processes: past `deadline` this
/// returns Errc::timeout, leaving MPI_Finalize to that thread (the process should exit).
Result<void> finalize(std::chrono::milliseconds deadline);

/// An MPI communicator, freed when its last owner lets go: the `MpiCommunicator` and every
/// request still pending on it. A request abandoned at a deadline may complete long after
/// its communicator's user is gone, and OpenMPI 4.1 crashes when a collective on a freed
/// communicator progresses. Destroy it without holding `lock_mpi()` (it takes the lock).
class OwnedComm {
 public:
  explicit OwnedComm(MPI_Comm comm) : comm_(comm) {}
  ~OwnedComm();
  OwnedComm(const OwnedComm&) = delete;
  OwnedComm& operator=(const OwnedComm&) = delete;

  MPI_Comm get() const { return comm_; }

 private:
  MPI_Comm comm_;
};

/// The Error for an MPI error code, with MPI_Error_string's text: Errc::invalid_argument
/// for errors in the arguments (counts, ranks, tags, truncation), Errc::io otherwise.
/// @param what names the operation and the group ("all_gather on world").
Error mpi_error(int code, std::string_view what);

}  // namespace corockpt::mpi_detail
