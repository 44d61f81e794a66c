#pragma once
// A test double of a GPU: its memory is host memory, in space `cuda`, that holds every
// byte XOR a key that depends on the byte's address. Code that reads or writes device
// memory directly instead of copying through the device — a memcpy from the host, or
// one from one device buffer to another — sees or leaves wrong values, and the test
// checking them fails.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>

#include "corockpt/plugins/device/device.hpp"

namespace corockpt::test {

class ScramblingDevice final : public Device {
 public:
  /// The key of the byte at `address`.
  static std::byte key(const std::byte* address) {
    const auto bits = reinterpret_cast<std::uintptr_t>(address) * 0x9E3779B97F4A7C15ull;
    return std::byte{static_cast<unsigned char>(0xA5 ^ (bits >> 56))};
  }

  std::string_view backend() const override { return "scrambling"; }
  MemorySpace space() const override { return MemorySpace::cuda; }
  const std::string& name() const override { return name_; }

  Result<DeviceMemory> allocate(std::size_t bytes) override {
    auto* memory = static_cast<std::byte*>(::operator new(bytes == 0 ? 1 : bytes, std::align_val_t{256}));
    {
      std::lock_guard lock(allocations_->mutex);
      allocations_->sizes[memory] = bytes == 0 ? 1 : bytes;
    }
    std::shared_ptr<std::byte> owned(memory, [allocations = allocations_](std::byte* p) {
      {
        std::lock_guard lock(allocations->mutex);
        allocations->sizes.erase(p);
      }
      ::operator delete(p, std::align_val_t{256});
    });
    return DeviceMemory(std::move(owned), bytes, MemorySpace::cuda);
  }
  /// Whether `pointer` lies in memory this device allocated (and has not freed).
  bool owns(const std::byte* pointer) const {
    std::lock_guard lock(allocations_->mutex);
    auto it = allocations_->sizes.upper_bound(pointer);
    if (it == allocations_->sizes.begin()) return false;
    --it;
    return pointer < it->first + it->second;
  }
  Task<void> copy(CopyDirection direction, std::span<const CopyPiece> pieces) override {
    for (const CopyPiece& piece : pieces) {
      for (std::size_t i = 0; i < piece.bytes; ++i) {
        std::byte value = piece.from[i];
        if (direction != CopyDirection::to_device) value ^= key(piece.from + i);
        if (direction != CopyDirection::to_host) value ^= key(piece.to + i);
        piece.to[i] = value;
      }
    }
    ++copies;
    co_return Result<void>{};
  }
  Result<void> order_after_compute() override {
    ++ordered;
    return {};
  }
  std::shared_ptr<BufferAllocator> staging_allocator() override {
    ++staging_allocators;
    return make_host_allocator();
  }

  std::atomic<int> copies{0};
  std::atomic<int> ordered{0};
  std::atomic<int> staging_allocators{0};

 private:
  struct Allocations {
    mutable std::mutex mutex;
    std::map<const std::byte*, std::size_t> sizes;
  };
  // Shared with the memory's deleters: memory may outlive the device object.
  std::shared_ptr<Allocations> allocations_ = std::make_shared<Allocations>();
  const std::string name_ = "scrambling:0";
};

}  // namespace corockpt::test
