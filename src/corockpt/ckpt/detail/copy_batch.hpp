#pragma once
/// @file
/// `CopyBatch`: copies among host memory and one device's memory, gathered and then run
/// together — host-to-host pieces as memcpy, the others as one `Device::copy` per
/// direction — so a unit's many small tensors cost one wait per direction. And
/// `Scratch`: a gather's buffer, in host or device memory.

#include <cstddef>
#include <vector>

#include "corockpt/plugins/device/device.hpp"
#include "corockpt/runtime/task.hpp"

namespace corockpt::detail {

class CopyBatch {
 public:
  /// `device` (may be null when every piece is host memory) must outlive the batch.
  explicit CopyBatch(Device* device) : device_(device) {}

  /// Adds a copy of `bytes` bytes (0: nothing, the pointers may be null). Spaces other
  /// than host are the device's.
  void add(std::byte* to, MemorySpace to_space, const std::byte* from, MemorySpace from_space, std::size_t bytes);
  /// Runs every copy added so far and forgets them; their memory must be valid until then.
  /// @returns the device's errors; Errc::invalid_argument when a piece touches device
  ///   memory and the batch has no device.
  Task<void> run();

 private:
  Device* device_;
  std::vector<CopyPiece> on_host_;
  std::vector<CopyPiece> to_host_;
  std::vector<CopyPiece> to_device_;
  std::vector<CopyPiece> within_device_;
};

/// Zeroed host bytes, or uninitialised memory of a device.
class Scratch {
 public:
  /// `bytes` bytes in `space`: host memory, or `device`'s (which must then be given).
  /// @returns the device's allocation errors.
  static Result<Scratch> make(Device* device, MemorySpace space, std::size_t bytes);

  std::byte* data() { return space_ == MemorySpace::host ? host_.data() : device_.data(); }
  std::size_t size() const { return size_; }
  std::span<std::byte> bytes() { return {data(), size_}; }
  MemorySpace space() const { return space_; }

 private:
  std::vector<std::byte> host_;
  DeviceMemory device_;
  std::size_t size_ = 0;
  MemorySpace space_ = MemorySpace::host;
};

}  // namespace corockpt::detail
