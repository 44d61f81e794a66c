#pragma once
/// @file
/// `BufferPool`: a bounded set of aligned staging buffers, allocated once and reused.
/// Acquiring from an empty pool suspends until a buffer comes back: that is the
/// backpressure that keeps snapshots and writes within a fixed memory budget. The
/// allocator is injected so that the cuda plugin can supply pinned memory.

#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

#include "corockpt/runtime/completion.hpp"
#include "corockpt/runtime/task.hpp"

namespace corockpt {

/// Where staging memory comes from.
class BufferAllocator {
 public:
  virtual ~BufferAllocator() = default;
  /// @returns `bytes` of memory aligned to `alignment` (a power of two), or an Error.
  virtual Result<std::byte*> allocate(std::size_t bytes, std::size_t alignment) = 0;
  virtual void deallocate(std::byte* memory, std::size_t bytes) = 0;
  virtual std::string_view name() const = 0;
};

/// Plain page-aligned host memory from anonymous mmap (what io_uring can register);
/// allocations of 2 MiB or more on transparent huge pages where the kernel offers them.
std::shared_ptr<BufferAllocator> make_host_allocator();

class BufferPool;

/// A buffer on loan from a pool; returning it is automatic (destructor or `reset`).
class StagingBuffer {
 public:
  StagingBuffer() = default;
  StagingBuffer(StagingBuffer&& other) noexcept { *this = std::move(other); }
  StagingBuffer& operator=(StagingBuffer&& other) noexcept;
  ~StagingBuffer() { reset(); }

  std::span<std::byte> bytes() const { return bytes_; }
  std::byte* data() const { return bytes_.data(); }
  std::size_t size() const { return bytes_.size(); }
  /// Position in the pool, stable for the pool's life (the io_uring buffer index).
  std::size_t index() const { return index_; }
  explicit operator bool() const { return pool_ != nullptr; }
  /// Gives the buffer back to its pool now.
  void reset();

 private:
  friend class BufferPool;
  StagingBuffer(BufferPool* pool, std::size_t index, std::span<std::byte> bytes)
      : pool_(pool), index_(index), bytes_(bytes) {}
  BufferPool* pool_ = nullptr;
  std::size_t index_ = 0;
  std::span<std::byte> bytes_;
};

struct BufferPoolOptions {
  std::size_t buffer_bytes = 8 << 20;  ///< size of each buffer (rounded up to `alignment`)
  std::size_t buffer_count = 8;
  std::size_t alignment = 4096;  ///< at least 4096, a power of two
};

/// Thread rules: acquire, try_acquire and returning buffers may happen on any thread and
/// any executor, concurrently (one lock inside); ranks of one process may share a pool.
class BufferPool {
 public:
  /// Allocates every buffer now. @returns an Error naming the allocator if it cannot.
  static Result<std::unique_ptr<BufferPool>> create(BufferPoolOptions options,
                                                    std::shared_ptr<BufferAllocator> allocator);
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  /// A free buffer, or suspends until one is returned (first come, first served).
  /// No deadline: buffers come back when this process's own writes finish.
  /// @returns Errc::cancelled if the wait is cancelled.
  Task<StagingBuffer> acquire();
  /// A free buffer now, or an empty StagingBuffer.
  StagingBuffer try_acquire();

  std::size_t buffer_bytes() const { return buffer_bytes_; }
  std::size_t buffer_count() const { return buffers_.size(); }
  std::size_t total_bytes() const { return buffer_bytes_ * buffers_.size(); }
  std::size_t available() const;
  std::size_t alignment() const { return alignment_; }
  std::string_view allocator_name() const { return allocator_->name(); }
  /// Every buffer's memory, by index (what io_uring registers).
  std::span<const std::span<std::byte>> regions() const { return buffers_; }

 private:
  friend class StagingBuffer;
  BufferPool(std::shared_ptr<BufferAllocator> allocator, std::size_t buffer_bytes, std::size_t alignment)
      : allocator_(std::move(allocator)), buffer_bytes_(buffer_bytes), alignment_(alignment) {}
  void release(std::size_t index);

  std::shared_ptr<BufferAllocator> allocator_;
  std::size_t buffer_bytes_;
  std::size_t alignment_;
  std::vector<std::span<std::byte>> buffers_;

  mutable std::mutex mutex_;
  std::vector<std::size_t> free_;
  std::deque<std::shared_ptr<Completion<std::size_t>>> waiters_;
};

}  // namespace corockpt
