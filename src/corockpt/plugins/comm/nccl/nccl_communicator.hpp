#pragma once
/// @file
/// The `nccl` communicator plugin: collectives among GPUs, one rank per GPU. Built when
/// CMake finds CUDA and NCCL (COROCKPT_WITH_CUDA ON); otherwise its factories fail with
/// Errc::unavailable. This header includes no CUDA or NCCL header.
///
/// How it behaves, beyond `Communicator`'s promises:
/// - Spans: device memory of the communicator's GPU moves directly (`memory_space()` is
///   `cuda`). Host spans are staged: copied through page-locked bounce buffers and device
///   buffers on the communicator's stream (plugins/comm/nccl/host_staging.hpp), so the
///   checkpoint's small host-memory collectives (metadata, outcomes) work on an NCCL world
///   too; bulk data should be device memory.
/// - Bootstrap: the world is made through an existing world `Communicator` of the same
///   ranks: `mpi` (one process per rank) or, in one process with several GPUs, `local`.
///   Its rank 0 makes the unique id (ncclGetUniqueId), its broadcast hands it out.
/// - Non-blocking: communicators are created with ncclConfig_t::blocking = 0, so no call
///   ever waits for a peer: init, split and every enqueue return at once and the state is
///   polled (ncclCommGetAsyncError) with back-off on the runtime until it leaves
///   ncclInProgress. This is also what lets several ranks share one io thread.
/// - Completion: each operation is enqueued on the communicator's own CUDA stream, a CUDA
///   event is recorded after it and polled (cudaEventQuery) on the runtime with back-off
///   (20 µs, doubling up to 2 ms), checking ncclCommGetAsyncError each round. No thread
///   blocks per operation; nothing spins on a core.
/// - Enqueues on one communicator are serialized in issue order (a non-blocking NCCL
///   communicator takes no new operation while one is still being enqueued); completions
///   overlap. Operations on different communicators are independent.
/// - Ordering rule: NCCL does not promise that operations on two communicators progress
///   at the same time, so every rank must issue the collectives of all its groups in one
///   global order (unit registration order, from one strand), and get overlap by not
///   waiting between issues, never by issuing in different orders on different ranks.
/// - Deadline (`CommOptions::deadline`, counted from when this rank issues the operation,
///   its wait for its turn to enqueue included): an operation that misses it calls
///   ncclCommAbort (on the worker pool: it may take a while), which stops NCCL's kernels
///   and proxies, and then fails with Errc::timeout; the communicator is broken from then
///   on (Errc::unavailable). Any other failure on this rank breaks it too: the ranks are
///   out of step. Groups split from it are separate NCCL communicators and unaffected.
/// - Point-to-point: NCCL matches a send with a recv by issue order per peer pair, not by
///   tag; tags are only checked to be in 0..32767. A rank cannot send to itself (NCCL
///   pairs a self-send only with a recv in the same group, and each operation here is its
///   own group): NCCL reports it as invalid usage. NCCL cannot see a send and a recv of
///   different sizes: that is undefined (in practice a hang until the deadline).
/// - NCCL has no variable-size gathers: `all_gather_v` is one ncclBroadcast per rank in a
///   group, `gather_v` grouped ncclSend/ncclRecv to the root (its own part a device copy),
///   `barrier` an ncclAllReduce of one int. Ranks with no bytes to move are skipped
///   alike on every rank (the counts agree).
/// - `split` is ncclCommSplit (non-blocking), one new communicator with its own stream;
///   the caller makes each submesh's communicator once and caches it.
/// - Destroying a communicator calls ncclCommAbort, which frees it without waiting for
///   any peer (ncclCommDestroy may, and with several ranks on one thread that would
///   deadlock); every operation on it must have ended first.

#include <array>
#include <chrono>
#include <cstddef>
#include <memory>

#include "corockpt/plugins/comm/communicator.hpp"
#include "corockpt/runtime/runtime.hpp"

namespace corockpt {

/// The bytes of an ncclUniqueId (NCCL_UNIQUE_ID_BYTES).
using NcclUniqueId = std::array<std::byte, 128>;

struct NcclOptions {
  /// The CUDA device ordinal this rank uses; one rank per device.
  int device = 0;
  /// Deadline and test hooks of every operation, inherited by split groups.
  CommOptions comm;
  /// How long the NCCL init may take once the id is known (the id's broadcast has the
  /// bootstrap communicator's own deadline). Longer than an operation's: an init connects
  /// every peer.
  std::chrono::milliseconds init_deadline{std::chrono::seconds(120)};
};

/// A unique id for a new NCCL world, the same on every rank of `world`: rank 0 makes it
/// with ncclGetUniqueId (which needs no GPU) and broadcasts it through `world` (with a
/// flag, so a failure there fails every rank at once instead of leaving them to time out).
/// A collective on `world`: call it on every rank.
/// @returns the id; an Error with NCCL's text if rank 0 could not make it; `world`'s
///   error if the broadcast fails; Errc::unavailable when built without NCCL.
Task<NcclUniqueId> nccl_unique_id_from(std::shared_ptr<Communicator> world);

/// This rank's communicator in an NCCL world of the ranks of `bootstrap` (same ranks, same
/// order), named "world", on GPU `options.device`. A collective on `bootstrap`: call it on
/// every rank (with the `local` backend, each rank's coroutine on its own strand and its
/// own device). `runtime` must outlive the communicator.
/// @returns Errc::timeout (after ncclCommAbort) when the init does not finish within the
///   deadline; an Error naming the failing NCCL or CUDA call; Errc::unavailable when
///   built without CUDA/NCCL or when the device is missing.
Task<std::shared_ptr<Communicator>> make_nccl_world(Runtime& runtime, std::shared_ptr<Communicator> bootstrap,
                                                    NcclOptions options = {});

}  // namespace corockpt
