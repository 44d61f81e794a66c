#pragma once
/// @file
/// `Snapshot`: a copy of the chunks a rank writes, in staging memory allocated once (from
/// an injected allocator: pinned host memory when CUDA is used) and reused by every
/// checkpoint. Taking it is the only part of an asynchronous save the training loop
/// waits for: a memory copy, spread over the worker pool, with no collective. The save
/// then persists from the snapshot while the training loop mutates its state.
///
/// The memory is laid out as the images of the rank's data files (data_file_layout.hpp:
/// each file's header, then its chunks, page-aligned and zero-padded to a page), so the
/// save writes the files straight from it (O_DIRECT) with no second copy.

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "corockpt/ckpt/local_chunks.hpp"
#include "corockpt/plugins/device/device.hpp"
#include "corockpt/runtime/buffer_pool.hpp"
#include "corockpt/runtime/runtime.hpp"

namespace corockpt {

class Snapshot {
 public:
  /// The staging memory for the data files `rank` writes for `chunks`, touched now so
  /// the first snapshot pays no page faults. @returns the allocator's error.
  static Result<std::unique_ptr<Snapshot>> create(std::span<const LocalChunk> chunks, int rank,
                                                  std::shared_ptr<BufferAllocator> allocator);
  /// The bytes `create` would allocate.
  static std::uint64_t bytes_needed(std::span<const LocalChunk> chunks, int rank);
  ~Snapshot();
  Snapshot(const Snapshot&) = delete;
  Snapshot& operator=(const Snapshot&) = delete;

  /// Copies `live` (the same list `create` saw, in the same order) into the staging
  /// memory: host chunks in pieces of at most 16 MiB, in parallel on the runtime's
  /// workers; chunks in `device` memory through `device` (after the compute it has
  /// queued: Device::order_after_compute, unless `ordered` says the caller did so when
  /// the state was current).
  /// Unit by unit (LocalChunk::unit) in `order` (every unit of `live` once; empty: as
  /// listed): a unit's copies are issued once the previous unit's have landed, and
  /// `on_unit(unit)` is called (on the awaiting coroutine's executor)
  /// as soon as all of a unit's bytes are copied — at once for a unit with none.
  /// @returns Errc::invalid_argument when a chunk lies in device memory and `device` is
  ///   null or of another space; the device's copy errors.
  Task<void> take(Runtime& runtime, std::span<const LocalChunk> live, Device* device = nullptr, bool ordered = false,
                  std::span<const std::uint32_t> order = {}, std::function<void(std::uint32_t)> on_unit = {});

  /// The chunks as of the last `take`, their bytes in the staging memory (chunks this
  /// rank does not write keep a null view: they are only listed).
  std::span<const LocalChunk> chunks() const { return chunks_; }
  /// The data files' images, each padded to a page (SaveOptions::file_images).
  const std::vector<std::span<const std::byte>>& file_images() const { return file_images_; }
  std::uint64_t bytes() const { return bytes_; }

 private:
  Snapshot() = default;
  std::shared_ptr<BufferAllocator> allocator_;
  std::byte* memory_ = nullptr;
  std::uint64_t bytes_ = 0;
  std::vector<LocalChunk> chunks_;
  std::vector<std::span<const std::byte>> file_images_;
};

}  // namespace corockpt
