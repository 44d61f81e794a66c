// The bootstrap of an NCCL world: the unique id through an existing world communicator,
// then every rank's non-blocking init, polled until done (see nccl_communicator.hpp).
#include <cuda_runtime.h>
#include <nccl.h>

#include <array>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <utility>

#include "corockpt/plugins/comm/detail/backoff.hpp"
#include "corockpt/plugins/comm/nccl/nccl_communicator.hpp"
#include "corockpt/plugins/comm/nccl/nccl_state.hpp"
#include "corockpt/plugins/device/cuda/cuda_error.hpp"
#include "corockpt/runtime/deadline.hpp"

namespace corockpt {

static_assert(sizeof(ncclUniqueId) == std::tuple_size_v<NcclUniqueId>, "NcclUniqueId must hold an ncclUniqueId");

namespace {

using comm_detail::poll_with_backoff;
using cuda_detail::use_device;
using nccl_detail::nccl_error;
using nccl_detail::non_blocking_config;
using nccl_detail::NcclState;

/// Rank 0's part of the bootstrap: an id, or why there is none.
Result<ncclUniqueId> make_unique_id() {
  ncclUniqueId id{};
  if (ncclResult_t result = ncclGetUniqueId(&id); result != ncclSuccess) {
    return fail(nccl_error(result, "ncclGetUniqueId", nullptr));
  }
  return id;
}

/// Starts this rank's non-blocking init. @returns the handle (still in progress).
Result<ncclComm_t> start_init(const NcclUniqueId& id, int rank, int size, int device) {
  if (auto ready = use_device(device); !ready) return fail(ready.error());
  ncclUniqueId raw{};
  std::memcpy(&raw, id.data(), sizeof raw);
  ncclConfig_t config = non_blocking_config();
  ncclComm_t comm = nullptr;
  const ncclResult_t result = ncclCommInitRankConfig(&comm, size, raw, rank, &config);
  if (result != ncclSuccess && result != ncclInProgress) {
    Error error = nccl_error(result, "ncclCommInitRankConfig", comm);
    if (comm != nullptr) (void)ncclCommAbort(comm);
    return fail(std::move(error));
  }
  return comm;
}


}  // namespace

Task<NcclUniqueId> nccl_unique_id_from(std::shared_ptr<Communicator> world) {
  // A flag byte, then the id: a failure on rank 0 reaches every rank at once.
  std::array<std::byte, 1 + std::tuple_size_v<NcclUniqueId>> blob{};
  std::optional<Error> failure;
  if (world->rank() == 0) {
    auto made = make_unique_id();
    if (made) {
      blob[0] = std::byte{1};
      std::memcpy(blob.data() + 1, &*made, sizeof(ncclUniqueId));
    } else {
      failure = std::move(made.error());
    }
  }
  std::span<std::byte> carried(blob);
  Task<void> broadcasting = world->broadcast(carried, 0);
  Result<void> sent = co_await std::move(broadcasting);
  if (!sent) co_return fail(std::move(sent.error()));
  if (failure) co_return fail(std::move(*failure));
  if (blob[0] != std::byte{1}) {
    co_return fail(Errc::unavailable, "rank 0 of " + world->name() + " could not make an NCCL unique id",
                   {.rank = world->rank(), .operation = "nccl_unique_id_from"});
  }
  NcclUniqueId id{};
  std::memcpy(id.data(), blob.data() + 1, id.size());
  co_return id;
}

Task<std::shared_ptr<Communicator>> make_nccl_world(Runtime& runtime, std::shared_ptr<Communicator> bootstrap,
                                                    NcclOptions options) {
  const int rank = bootstrap->rank();
  const int size = bootstrap->size();
  const std::string what = "make_nccl_world (rank " + std::to_string(rank) + " of " + std::to_string(size) +
                           " on cuda:" + std::to_string(options.device) + ")";
  // Every rank takes part in the id's broadcast, even one without its device: the others
  // would wait for it otherwise.
  Task<NcclUniqueId> making = nccl_unique_id_from(bootstrap);
  Result<NcclUniqueId> id = co_await std::move(making);
  if (!id) co_return fail(std::move(id.error().with_rank(rank)));
  auto resources = nccl_detail::make_resources(options.device);
  if (!resources) co_return fail(std::move(resources.error().with_rank(rank).with_operation("make_nccl_world")));

  auto started = start_init(*id, rank, size, options.device);
  if (!started) co_return fail(std::move(started.error().with_rank(rank)));
  auto state = std::make_shared<NcclState>(*started);
  auto initialized = [state, what] { return state->progress(what); };
  Task<void> polling = poll_with_backoff(initialized);
  Task<void> bounded = with_deadline(std::move(polling), options.init_deadline, what);
  Result<void> ready = co_await std::move(bounded);
  if (!ready) {
    ncclComm_t comm = state->take_for_abort(ready.error());
    const int on = options.device;
    auto aborting = [comm, on] {
      (void)use_device(on);
      (void)ncclCommAbort(comm);
    };
    Task<void> stopping = runtime.offload(aborting);
    (void)co_await std::move(stopping);
    co_return fail(std::move(ready.error().with_rank(rank).with_operation("make_nccl_world")));
  }
  co_return nccl_detail::make_nccl_communicator(runtime, std::move(state), std::move(*resources), rank, size, "world",
                                                options.comm, rank);
}

}  // namespace corockpt
