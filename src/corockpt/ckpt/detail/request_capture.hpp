#pragma once
/// @file
/// `RequestCapture`: what an asynchronous save copies when it is requested, before
/// `AsyncCheckpointer::async_save` returns — the chunks the training loop's forward
/// changes (`LocalChunk::at_request`: buffers such as BatchNorm's running statistics).
/// The snapshot copies the rest later, behind the per-unit fences that only hold back the
/// optimizer step; by then the next forward may have run. The capture owns its copies;
/// the save reads those chunks from them instead of from the live memory.

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "corockpt/ckpt/local_chunks.hpp"
#include "corockpt/plugins/device/device.hpp"
#include "corockpt/runtime/runtime.hpp"

namespace corockpt::detail {

class RequestCapture {
 public:
  /// Nothing captured.
  RequestCapture() = default;

  /// Copies every chunk of `chunks` that is `at_request`, written by this rank and not
  /// empty into host memory of its own: host memory by memcpy on the caller's thread;
  /// device memory through `device`, which the caller has ordered after its compute
  /// (Device::order_after_compute), the copy finished before this returns. Blocks the caller: never call it on the
  /// runtime's io thread (Errc::invalid_argument there, when a device copy is needed).
  /// Deadline: the device's copy deadline.
  /// @returns Errc::invalid_argument naming a chunk in device memory when `device` is
  ///   null or of another space; the device's errors.
  static Result<RequestCapture> take(Runtime& runtime, std::span<const LocalChunk> chunks, Device* device);

  /// `chunks` — the list given to `take`, as it is now — with each captured chunk's bytes
  /// in the capture's copy (space host), everything else as listed; `chunks` itself when
  /// nothing was captured. The list is made on the first call and kept: it lives as long
  /// as the capture (and refers to `chunks`' memory for the other chunks).
  std::span<const LocalChunk> substitute(std::span<const LocalChunk> chunks);

  /// How many chunks, and bytes of them, were captured.
  std::size_t count() const { return captured_.size(); }
  std::uint64_t bytes() const { return bytes_; }

 private:
  std::vector<std::byte> memory_;
  std::uint64_t bytes_ = 0;
  /// Index in the list given to `take`, and where its copy starts in memory_.
  std::vector<std::pair<std::size_t, std::size_t>> captured_;
  std::vector<LocalChunk> substituted_;
};

}  // namespace corockpt::detail
