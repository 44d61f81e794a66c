#include "corockpt/plugins/comm/nccl/nccl_state.hpp"

#include <asio/post.hpp>

#include <utility>

#include "corockpt/plugins/device/cuda/cuda_device.hpp"
#include "corockpt/plugins/device/cuda/cuda_error.hpp"

namespace corockpt::nccl_detail {

using cuda_detail::cuda_error;
using cuda_detail::use_device;

namespace {

Errc code_for(ncclResult_t result) {
  switch (result) {
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      return Errc::invalid_argument;
    default:
      return Errc::io;
  }
}

}  // namespace

Error nccl_error(ncclResult_t result, std::string_view call, ncclComm_t comm) {
  std::string message = std::string(call) + ": " + ncclGetErrorString(result);
  if (const char* last = ncclGetLastError(comm); last != nullptr && *last != '\0') {
    message += std::string(" (") + last + ")";
  }
  return Error{code_for(result), std::move(message), {.operation = std::string(call)}, 0};
}

ncclConfig_t non_blocking_config() {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  return config;
}

std::optional<Result<void>> NcclState::progress(const std::string& what) {
  std::lock_guard lock(mutex);
  if (comm == nullptr) return fail(Errc::unavailable, what + ": the communicator was aborted");
  ncclResult_t state = ncclSuccess;
  if (ncclResult_t result = ncclCommGetAsyncError(comm, &state); result != ncclSuccess) {
    return fail(nccl_error(result, "ncclCommGetAsyncError", comm));
  }
  if (state == ncclInProgress) return std::nullopt;
  if (state != ncclSuccess) {
    Error error = nccl_error(state, "ncclCommGetAsyncError", comm);
    error.message = what + ": " + error.message;
    return fail(std::move(error));
  }
  return Result<void>{};
}

ncclComm_t NcclState::take_for_abort(const Error& why) {
  std::lock_guard lock(mutex);
  if (!broken_because) broken_because = why;
  return std::exchange(comm, nullptr);
}

void abort_in_background(Runtime& runtime, ncclComm_t comm, int device) {
  if (comm == nullptr) return;
  asio::post(runtime.workers(), [comm, device] {
    (void)use_device(device);
    (void)ncclCommAbort(comm);
  });
}

StreamResources::~StreamResources() {
  (void)use_device(device);
  if (scratch != nullptr) (void)cudaFree(scratch);
  if (stream != nullptr) (void)cudaStreamDestroy(stream);
}

Result<std::unique_ptr<StreamResources>> make_resources(int device) {
  auto count = cuda_device_count();
  if (!count) return fail(std::move(count.error()));
  if (device < 0 || device >= *count) {
    return fail(Errc::unavailable, "cuda:" + std::to_string(device) + " does not exist: this process sees " +
                                       std::to_string(*count) + " CUDA device(s)");
  }
  auto resources = std::make_unique<StreamResources>();
  resources->device = device;
  resources->bounces = std::make_unique<PinnedBounces>(device);
  if (auto ready = use_device(device); !ready) return fail(ready.error());
  if (cudaError_t code = cudaStreamCreateWithFlags(&resources->stream, cudaStreamNonBlocking); code != cudaSuccess) {
    return fail(cuda_error(code, "cudaStreamCreateWithFlags"));
  }
  if (cudaError_t code = cudaMalloc(&resources->scratch, sizeof(int)); code != cudaSuccess) {
    return fail(cuda_error(code, "cudaMalloc"));
  }
  return resources;
}

}  // namespace corockpt::nccl_detail
