#pragma once
/// @file
/// The `mpi` communicator plugin: OpenMPI, one process per rank, started with mpirun.
/// Built when CMake finds MPI and COROCKPT_WITH_MPI is ON; otherwise `make_mpi_world`
/// fails with Errc::unavailable naming the option.
///
/// How it behaves, beyond `Communicator`'s promises:
/// - MPI is initialized by the first `make_mpi_world` (MPI_Init_thread asking for
///   MPI_THREAD_SERIALIZED; a program that initialized MPI itself must have been granted
///   at least that). corockpt calls MPI from the caller's thread and from the runtime's
///   io thread, never two at once: every call holds one process-wide lock.
/// - Every operation is non-blocking MPI (MPI_Iallgather, MPI_Igatherv, MPI_Ibcast,
///   MPI_Ibarrier, MPI_Isend/MPI_Irecv, ...) completed by the one progress poller of the
///   process, a coroutine on the runtime that runs only while requests are pending.
/// - MPI reads and writes a staging copy, never the caller's buffers: what is sent is
///   copied in when the operation starts, what is received copied out when it ends. The
///   price is one memcpy each way; the reason is the deadline (next point).
/// - Deadline: an operation still pending at the deadline fails with Errc::timeout and
///   breaks this communicator (later operations fail at once with Errc::unavailable). MPI
///   cannot cancel a collective, so the request is left to MPI with its staging copy: the
///   caller's buffers are free the moment the operation's task ends. The request is still
///   tested whenever the poller runs for others, and keeps its MPI communicator alive until
///   it completes, even past the `Communicator`'s destruction (OpenMPI 4.1 crashes when a
///   collective on a freed communicator progresses). The other processes time out on
///   their own deadlines; MPI cannot tell which rank did not arrive.
/// - Any other failure on this rank (bad arguments included, which the other ranks
///   cannot see) also breaks the communicator: the ranks are out of step from then on.
/// - Sizes travel as MPI_BYTE with int counts: a per-rank count, or for the variable-size
///   collectives a total, above INT_MAX bytes is Errc::invalid_argument.
/// - `split` agrees on a non-blocking barrier within the deadline, then calls
///   MPI_Comm_split, which MPI offers only blocking: it holds the io thread for as long as
///   the members take to get there, which they all are, having passed the barrier.
/// - MPI errors come back as Errors with MPI_Error_string's text (MPI_ERRORS_RETURN is
///   set on every communicator made here).

#include <memory>

#include "corockpt/plugins/comm/communicator.hpp"
#include "corockpt/runtime/runtime.hpp"

namespace corockpt {

/// This process's rank in a world of all the processes mpirun started, on its own
/// duplicate of MPI_COMM_WORLD (checkpoint traffic never mixes with the program's), named
/// "world". Blocks the calling thread until every process has called it, up to
/// `options.deadline`, MPI's initialization included (a process of the job that died
/// before initializing MPI would otherwise block it for ever): call it at start-up, not
/// from a coroutine on `runtime`. Every process must call it the same number of times, in
/// the same order. The ranks exchange their host and pid, so that a timeout on any group
/// made from this world names the members on this host whose process has exited.
/// @returns Errc::unavailable when MPI is missing or cannot be initialized at
///   MPI_THREAD_SERIALIZED, Errc::timeout when the other processes do not join in time.
Result<std::shared_ptr<Communicator>> make_mpi_world(Runtime& runtime, CommOptions options = {});

/// Finalizes MPI if `make_mpi_world` initialized it; a no-op otherwise. Call it once at
/// exit after a success, after every operation has ended and every runtime using MPI is gone
/// (communicators destroyed later skip freeing themselves). Requests abandoned at a
/// deadline may still be pending: OpenMPI 4.1 finalizes regardless (the tests check it),
/// and their staging is freed after. MPI_Finalize may wait for every process of the job:
/// past `deadline` this gives up with Errc::timeout (a peer died after the last
/// collective), and the process should exit non-zero. After a failure that may come from
/// a dead peer, do not call it at all: exit non-zero.
/// @returns an Error with MPI's text if MPI_Finalize fails.
Result<void> finalize_mpi(std::chrono::milliseconds deadline = CommOptions{}.deadline);

}  // namespace corockpt
