#pragma once
/// @file
/// `AlignedMemory`: bytes of one's own at an alignment (O_DIRECT transfers need it),
/// freed when it goes: for one-off reads and windows beside the staging pool.

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <span>

namespace corockpt {

class AlignedMemory {
 public:
  AlignedMemory() = default;
  /// `bytes`, rounded up to `alignment` (a power of two), at `alignment`; false (no
  /// memory) when the allocation fails.
  AlignedMemory(std::size_t bytes, std::size_t alignment)
      : size_(std::max((bytes + alignment - 1) / alignment * alignment, alignment)),
        memory_(static_cast<std::byte*>(std::aligned_alloc(alignment, size_))) {}

  explicit operator bool() const { return memory_ != nullptr; }
  std::byte* data() const { return memory_.get(); }
  std::span<std::byte> span() const { return {memory_.get(), memory_ ? size_ : 0}; }

 private:
  struct Free {
    void operator()(std::byte* p) const { std::free(p); }
  };
  std::size_t size_ = 0;  // declared before memory_: its initializer uses it
  std::unique_ptr<std::byte, Free> memory_;
};

}  // namespace corockpt
