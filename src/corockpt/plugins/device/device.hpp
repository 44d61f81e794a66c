#pragma once
/// @file
/// `Device`: a memory space and the copies between it and host memory. Implementations:
/// `host` (plain memory; the device of CPU training and of tests) and `cuda` (one GPU:
/// device memory, pinned staging memory, copies on a dedicated stream). A snapshot copies
/// a tensor's bytes from the device into a staging buffer of the runtime's pool (whose
/// allocator the device supplies: pinned memory for `cuda`), from where storage writes them.
///
/// Spans: a span "of the device" is memory of this device's space (a device pointer for
/// `cuda`); a span "of the host" is ordinary process memory, best a staging buffer from a
/// pool made with `staging_allocator()`. Buffers must stay valid until the copy's task ends.
///
/// Ordering: nothing is promised between two copies in flight at once; await each copy
/// (or `when_all` of them) before using its bytes.

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "corockpt/runtime/buffer_pool.hpp"
#include "corockpt/runtime/task.hpp"

namespace corockpt {

/// Where a tensor's bytes live.
enum class MemorySpace {
  host,  ///< ordinary process memory
  cuda,  ///< memory of a CUDA device
};

/// "host" or "cuda".
std::string_view to_string(MemorySpace space);

/// Memory allocated by a `Device`, freed when the last handle to it goes. A handle is a
/// view that shares ownership: copies of it name the same bytes.
class DeviceMemory {
 public:
  DeviceMemory() = default;
  DeviceMemory(std::shared_ptr<std::byte> memory, std::size_t size, MemorySpace space)
      : memory_(std::move(memory)), size_(size), space_(space) {}

  std::byte* data() const { return memory_.get(); }
  std::size_t size() const { return size_; }
  std::span<std::byte> bytes() const { return {memory_.get(), size_}; }
  MemorySpace space() const { return space_; }
  explicit operator bool() const { return memory_ != nullptr; }

 private:
  std::shared_ptr<std::byte> memory_;
  std::size_t size_ = 0;
  MemorySpace space_ = MemorySpace::host;
};

/// Which way the pieces of one `Device::copy` go.
enum class CopyDirection {
  to_host,        ///< from this device's memory into host memory
  to_device,      ///< from host memory into this device's memory
  within_device,  ///< between two places of this device's memory
};

/// "copy_to_host", "copy_to_device" or "copy_within_device".
std::string_view to_string(CopyDirection direction);

/// One copy of a batch: `bytes` bytes from `from` to `to`.
struct CopyPiece {
  std::byte* to = nullptr;
  const std::byte* from = nullptr;
  std::size_t bytes = 0;
};

class Device {
 public:
  virtual ~Device() = default;

  /// "host" or "cuda".
  virtual std::string_view backend() const = 0;
  virtual MemorySpace space() const = 0;
  /// For messages: "host", "cuda:0".
  virtual const std::string& name() const = 0;

  /// `bytes` of this device's memory, uninitialised (aligned to at least 256 bytes).
  /// @returns Errc::no_space when the device has not that much free memory, another
  ///   Error naming the failing call otherwise.
  virtual Result<DeviceMemory> allocate(std::size_t bytes) = 0;

  /// Copies every piece of `pieces`, all going `direction`, and completes once all have
  /// landed: one completion for the batch (for `cuda`: one cudaMemcpyAsync per piece on
  /// the device's stream, then one host callback), so thousands of small tensors cost one
  /// wait. Pieces must not overlap. The pieces' memory must stay valid until the task ends.
  /// Deadline: the device's copy deadline (its factory's options); a batch that misses it
  /// fails with Errc::timeout and breaks the device (later copies fail at once with
  /// Errc::unavailable): the hardware may still write the destinations afterwards, so
  /// keep them alive.
  /// @returns Errc::invalid_argument for memory of the wrong space, an Error naming the
  ///   failing call ("cudaMemcpyAsync: invalid argument") otherwise.
  virtual Task<void> copy(CopyDirection direction, std::span<const CopyPiece> pieces) = 0;

  /// Copies `device` (this device's memory) into `host`; the sizes must be equal
  /// (else Errc::invalid_argument). One piece of `copy`.
  Task<void> copy_to_host(std::span<std::byte> host, std::span<const std::byte> device) {
    return copy_one(CopyDirection::to_host, host, device);
  }
  /// Copies `host` into `device` (this device's memory); otherwise like `copy_to_host`.
  Task<void> copy_to_device(std::span<std::byte> device, std::span<const std::byte> host) {
    return copy_one(CopyDirection::to_device, device, host);
  }

  /// Makes copies issued from now on start only after the compute work already queued on
  /// this device has finished (for `cuda`: the compute stream of its options), without
  /// blocking the caller. AsyncCheckpointer::async_save calls it when a save is asked for
  /// (the state as of that call is what the snapshot copies), save_checkpoint before its
  /// copies. A no-op for `host`, whose "compute" is the caller itself.
  virtual Result<void> order_after_compute() = 0;

  /// The allocator of the runtime's staging pool for this device: plain mmap memory for
  /// `host`; for `cuda` the same memory page-locked with cudaHostRegister (still what
  /// io_uring can register), so copies run at full speed without a second pool.
  virtual std::shared_ptr<BufferAllocator> staging_allocator() = 0;

 private:
  Task<void> copy_one(CopyDirection direction, std::span<std::byte> to, std::span<const std::byte> from);
};

}  // namespace corockpt
