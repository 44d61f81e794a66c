#pragma once
/// @file
/// The nccl communicator's detour for host spans (NCCL moves device memory only): an
/// operation's host send bytes go to a device buffer before its NCCL calls, and its
/// device receive buffer comes back to the host after them, all queued on the
/// communicator's stream. Meant for small messages (a checkpoint's metadata and
/// outcomes), as PyTorch's object collectives on NCCL do; bulk data should be device memory.
///
/// Why pinned bounce buffers: cudaMemcpyAsync of pageable memory may wait for the stream,
/// i.e. for the collectives queued before it, and several ranks may share one thread
/// (in-process worlds): that wait could be on a peer this thread has yet to serve. A
/// page-locked copy is queued without waiting. Why a pool that frees only at the end:
/// cudaFreeHost waits for the whole device, the same trap.

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <mutex>
#include <span>
#include <vector>

#include "corockpt/plugins/comm/detail/planned_communicator.hpp"

namespace corockpt::nccl_detail {

/// Page-locked host buffers of one communicator, reused; freed with the pool.
class PinnedBounces {
 public:
  explicit PinnedBounces(int device) : device_(device) {}
  ~PinnedBounces();
  PinnedBounces(const PinnedBounces&) = delete;
  PinnedBounces& operator=(const PinnedBounces&) = delete;

  /// A page-locked buffer of at least `bytes` (> 0). @returns cudaHostAlloc's error.
  Result<std::span<std::byte>> take(std::size_t bytes);
  /// Back to the pool, for the next operation.
  void give_back(std::span<std::byte> buffer);
  /// The CUDA device ordinal of the communicator.
  int device() const { return device_; }

 private:
  int device_;
  std::mutex mutex_;
  std::vector<std::span<std::byte>> free_;
  std::vector<void*> all_;
};

/// One operation's detour. Use: `prepare`, then (under the turn to enqueue)
/// `enqueue_before` and the NCCL calls on the rewritten plan, then `enqueue_after`; once
/// the stream has passed it all, `finish`. An operation that failed midway never calls
/// finish: its bounce buffers are kept out of the pool (the hardware may still write
/// them) until the pool goes.
class HostStaging {
 public:
  explicit HostStaging(PinnedBounces& bounces) : bounces_(bounces) {}
  ~HostStaging();
  HostStaging(const HostStaging&) = delete;
  HostStaging& operator=(const HostStaging&) = delete;

  /// Takes bounce buffers for the spans of `plan` that `on_host` says are host memory
  /// (the receive span only where this rank receives: `receives`), and copies the bytes
  /// to send into them. @returns cudaHostAlloc's error.
  template <class OnHost>
  Result<void> prepare(const comm_detail::Plan& plan, bool receives, OnHost on_host) {
    if (!plan.send.empty() && on_host(plan.send.data())) {
      if (auto ok = take(send_, plan.send.size()); !ok) return ok;
      std::copy(plan.send.begin(), plan.send.end(), send_.bounce.begin());
    }
    if (receives && !plan.recv.empty() && on_host(plan.recv.data())) {
      if (auto ok = take(recv_, plan.recv.size()); !ok) return ok;
      host_recv_ = plan.recv;
      // A broadcast's buffer is also its root's input.
      if (plan.kind == comm_detail::OpKind::broadcast) {
        std::copy(plan.recv.begin(), plan.recv.end(), recv_.bounce.begin());
        recv_.copy_in = true;
      }
    }
    return {};
  }
  bool needed() const { return !send_.bounce.empty() || !recv_.bounce.empty(); }

  /// On `stream`: device buffers (cudaMallocAsync) and the copies into them; points
  /// `plan`'s staged spans at them.
  Result<void> enqueue_before(comm_detail::Plan& plan, cudaStream_t stream);
  /// On `stream`: the received bytes back into the bounce buffer, then the device
  /// buffers freed (cudaFreeAsync).
  Result<void> enqueue_after(cudaStream_t stream);
  /// The received bytes into the caller's span, and the bounce buffers back to the pool.
  void finish();

 private:
  struct Side {
    std::span<std::byte> bounce;  // page-locked, at least the span's size
    std::size_t bytes = 0;
    void* device = nullptr;
    bool copy_in = false;  // copied to the device before the NCCL calls
  };
  Result<void> take(Side& side, std::size_t bytes);

  PinnedBounces& bounces_;
  Side send_;
  Side recv_;
  std::span<std::byte> host_recv_;
  bool finished_ = false;
};

}  // namespace corockpt::nccl_detail
