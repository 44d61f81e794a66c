#pragma once
/// @file
/// The `cuda` device plugin: one GPU. Built when CMake finds CUDA (COROCKPT_WITH_CUDA ON);
/// otherwise every factory here fails with Errc::unavailable naming the option. This
/// header includes no CUDA header: code that uses it builds without CUDA.
///
/// How it behaves, beyond `Device`'s promises:
/// - Each device object owns one CUDA stream (non-blocking with respect to the legacy
///   default stream): ranks of one process each get their own. Its copies run on that
///   stream, in the order they are issued, with cudaMemcpyAsync.
/// - Completion: after each copy an event is recorded and a host function queued
///   (cudaLaunchHostFunc); when the stream reaches it, CUDA's own callback thread fills
///   the copy's `Completion`, which resumes the awaiting coroutine on its executor. The
///   event is then queried for the copy's error. No thread blocks per copy, no core spins.
/// - The host side of a copy should be pinned (a staging buffer from a pool made with
///   `staging_allocator()`): cudaMemcpyAsync of pageable memory blocks the thread that
///   issues it, so such copies are issued from the runtime's worker pool instead (and are
///   slower: the driver stages them through its own pinned buffers).
/// - The pinned allocator is anonymous mmap (the runtime's host allocator, huge pages
///   included) registered with cudaHostRegister (portable: every device sees it pinned);
///   never cudaHostAlloc, whose memory io_uring cannot register on some kernels.
/// - CUDA errors come back as Errors naming the call with CUDA's text
///   ("cudaMemcpyAsync: invalid argument"): Errc::invalid_argument for bad arguments,
///   Errc::no_space for allocations the device cannot satisfy, Errc::unavailable when
///   there is no usable GPU or driver, Errc::io otherwise.
/// - Every CUDA call first makes the device current on the calling thread, so ranks on
///   different GPUs can share the runtime's threads.

#include <chrono>
#include <memory>

#include "corockpt/plugins/device/device.hpp"
#include "corockpt/runtime/runtime.hpp"

namespace corockpt {

struct CudaDeviceOptions {
  /// The CUDA device ordinal.
  int device = 0;
  /// How long one copy may take from its issue, queueing behind earlier copies included.
  std::chrono::milliseconds copy_deadline{std::chrono::seconds(120)};
  /// The training loop's stream (a `cudaStream_t`), what `order_after_compute` waits for;
  /// null means the legacy default stream.
  void* compute_stream = nullptr;
};

/// The number of CUDA devices this process sees.
/// @returns Errc::unavailable with CUDA's reason when there is no driver or device
///   (cudaGetDeviceCount fails), or when corockpt was built without CUDA; a count >= 1
///   otherwise.
Result<int> cuda_device_count();

/// A CUDA device with its own stream. `runtime` must outlive it. Destroying it waits for
/// the copies still queued on its stream.
/// @returns Errc::unavailable when CUDA or the device is missing, an Error naming the
///   failing call otherwise.
Result<std::shared_ptr<Device>> make_cuda_device(Runtime& runtime, CudaDeviceOptions options = {});

/// The pinned staging allocator on its own (what `make_cuda_device(...)->staging_allocator()`
/// returns): mmap'd memory registered with cudaHostRegister on `device`.
/// @returns Errc::unavailable when CUDA or the device is missing.
Result<std::shared_ptr<BufferAllocator>> make_cuda_pinned_allocator(int device = 0);

}  // namespace corockpt
