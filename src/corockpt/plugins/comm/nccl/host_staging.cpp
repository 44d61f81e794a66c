#include "corockpt/plugins/comm/nccl/host_staging.hpp"

#include <algorithm>
#include <bit>

#include "corockpt/plugins/device/cuda/cuda_error.hpp"

namespace corockpt::nccl_detail {

using cuda_detail::cuda_error;
using cuda_detail::use_device;

PinnedBounces::~PinnedBounces() {
  (void)use_device(device_);
  for (void* buffer : all_) (void)cudaFreeHost(buffer);
}

Result<std::span<std::byte>> PinnedBounces::take(std::size_t bytes) {
  std::lock_guard lock(mutex_);
  // The smallest free buffer that fits.
  auto best = free_.end();
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->size() >= bytes && (best == free_.end() || it->size() < best->size())) best = it;
  }
  if (best != free_.end()) {
    std::span<std::byte> buffer = *best;
    free_.erase(best);
    return buffer;
  }
  // Powers of two (at least 4 KiB), so sizes that vary a little reuse buffers.
  const std::size_t size = std::bit_ceil(std::max<std::size_t>(bytes, 4096));
  if (auto ready = use_device(device_); !ready) return fail(ready.error());
  void* memory = nullptr;
  if (cudaError_t code = cudaHostAlloc(&memory, size, cudaHostAllocDefault); code != cudaSuccess) {
    return fail(cuda_error(code, "cudaHostAlloc"));
  }
  all_.push_back(memory);
  return std::span<std::byte>(static_cast<std::byte*>(memory), size);
}

void PinnedBounces::give_back(std::span<std::byte> buffer) {
  std::lock_guard lock(mutex_);
  free_.push_back(buffer);
}

HostStaging::~HostStaging() {
  if (!finished_) return;  // left out of the pool: see the header
  for (Side* side : {&send_, &recv_}) {
    if (!side->bounce.empty()) bounces_.give_back(side->bounce);
  }
}

Result<void> HostStaging::take(Side& side, std::size_t bytes) {
  auto bounce = bounces_.take(bytes);
  if (!bounce) return fail(std::move(bounce.error()));
  side.bounce = *bounce;
  side.bytes = bytes;
  side.copy_in = &side == &send_;
  return {};
}

Result<void> HostStaging::enqueue_before(comm_detail::Plan& plan, cudaStream_t stream) {
  if (!needed()) return {};
  if (auto ready = use_device(bounces_.device()); !ready) return ready;
  for (Side* side : {&send_, &recv_}) {
    if (side->bounce.empty()) continue;
    if (cudaError_t code = cudaMallocAsync(&side->device, side->bytes, stream); code != cudaSuccess) {
      side->device = nullptr;
      return fail(cuda_error(code, "cudaMallocAsync"));
    }
    if (side->copy_in) {
      if (cudaError_t code =
              cudaMemcpyAsync(side->device, side->bounce.data(), side->bytes, cudaMemcpyHostToDevice, stream);
          code != cudaSuccess) {
        return fail(cuda_error(code, "cudaMemcpyAsync"));
      }
    }
  }
  if (send_.device) plan.send = {static_cast<const std::byte*>(send_.device), send_.bytes};
  if (recv_.device) plan.recv = {static_cast<std::byte*>(recv_.device), recv_.bytes};
  return {};
}

Result<void> HostStaging::enqueue_after(cudaStream_t stream) {
  if (!needed()) return {};
  // (The caller may have resumed on another thread since enqueue_before.)
  if (auto ready = use_device(bounces_.device()); !ready) return ready;
  Result<void> result;
  if (recv_.device) {
    if (cudaError_t code =
            cudaMemcpyAsync(recv_.bounce.data(), recv_.device, recv_.bytes, cudaMemcpyDeviceToHost, stream);
        code != cudaSuccess) {
      result = fail(cuda_error(code, "cudaMemcpyAsync"));
    }
  }
  for (Side* side : {&send_, &recv_}) {
    if (side->device != nullptr) (void)cudaFreeAsync(side->device, stream);
    side->device = nullptr;
  }
  return result;
}

void HostStaging::finish() {
  if (!host_recv_.empty()) std::copy_n(recv_.bounce.begin(), host_recv_.size(), host_recv_.begin());
  finished_ = true;
}

}  // namespace corockpt::nccl_detail
