#pragma once
/// @file
/// What the nccl plugin's files share (internal: it includes nccl.h and cuda_runtime.h, so
/// it is not installed): NCCL's errors as corockpt's, the shared state of one NCCL
/// communicator, its CUDA resources, and the factory the bootstrap
/// (nccl_bootstrap.cpp) makes the world's communicator with. The collectives are in
/// nccl_communicator.cpp.

#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "corockpt/plugins/comm/communicator.hpp"
#include "corockpt/plugins/comm/detail/turn_queue.hpp"
#include "corockpt/plugins/comm/nccl/host_staging.hpp"
#include "corockpt/runtime/runtime.hpp"

namespace corockpt::nccl_detail {

/// "<call>: <ncclGetErrorString> (<ncclGetLastError>)"; invalid arguments and usage are
/// Errc::invalid_argument, the rest Errc::io.
Error nccl_error(ncclResult_t result, std::string_view call, ncclComm_t comm);

/// A config for a non-blocking communicator (ncclConfig_t::blocking = 0).
ncclConfig_t non_blocking_config();

/// The NCCL handle and what the operations in flight on it share. Every NCCL call on the
/// handle is made under `mutex`; an abort takes the handle out first, so a late poll
/// finds it gone instead of using a freed communicator.
struct NcclState {
  explicit NcclState(ncclComm_t c) : comm(c) {}

  std::mutex mutex;
  ncclComm_t comm;  // null once aborted; guarded by `mutex`
  std::optional<Error> broken_because;  // guarded by `mutex`
  /// The order of enqueues: the order operations enter it is the order NCCL sees them.
  comm_detail::TurnQueue turns;

  /// The communicator's state: nothing while NCCL is still working on the last call
  /// (ncclInProgress), success, or its error prefixed with `what`.
  std::optional<Result<void>> progress(const std::string& what);

  /// Takes the handle out for an abort (null if already taken); records why.
  ncclComm_t take_for_abort(const Error& why);
};

/// Aborts `comm` on a worker thread, not waiting: for communicators nobody else can see.
void abort_in_background(Runtime& runtime, ncclComm_t comm, int device);

/// The communicator's stream, the scratch int of its barrier and the bounce buffers of
/// its host spans, freed on destruction.
struct StreamResources {
  int device = 0;
  cudaStream_t stream = nullptr;
  void* scratch = nullptr;
  std::unique_ptr<PinnedBounces> bounces;

  ~StreamResources();
};

/// A stream, scratch and bounces on `device`. @returns Errc::unavailable when the device
/// does not exist; the failing CUDA call's error otherwise.
Result<std::unique_ptr<StreamResources>> make_resources(int device);

/// This rank's Communicator over an NCCL communicator whose init (or split) has finished
/// (defined in nccl_communicator.cpp).
std::shared_ptr<Communicator> make_nccl_communicator(Runtime& runtime, std::shared_ptr<NcclState> state,
                                                     std::unique_ptr<StreamResources> resources, int rank, int size,
                                                     std::string name, CommOptions options, int world_rank);

}  // namespace corockpt::nccl_detail
