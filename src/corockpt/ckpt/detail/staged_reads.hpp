#pragma once
/// @file
/// Running a read plan (read_plan.hpp) through the staging buffers: each read lands in a
/// buffer straight from the disk (O_DIRECT where the file is: the aligned superset of its
/// range, with the short read at a file's end), every checksum block in it is verified
/// and the elements it completes are copied, or converted, into their targets right
/// after (while in cache), on a worker while later reads are in flight. Memory: the pool's buffers and nothing per byte read, except a
/// read longer than a buffer (only when one checksum block is), which takes an aligned
/// allocation of its own, one at a time, after the others.

#include <cstdint>
#include <functional>
#include <span>

#include "corockpt/ckpt/checkpoint_io.hpp"
#include "corockpt/ckpt/checkpoint_reader.hpp"
#include "corockpt/ckpt/detail/read_plan.hpp"

namespace corockpt::detail {

/// The read limits for `reader`'s opened files and io.staging's buffers.
ReadPlanLimits read_limits(CheckpointReader& reader, const BufferPool& staging);

struct StagedReadOptions {
  int concurrency = 16;  ///< reads in flight at most (the pool may allow fewer)
  /// Called on the caller's executor after each read is copied (file bytes done, of total).
  std::function<void(std::uint64_t done, std::uint64_t total)> progress;
};

/// Reads, verifies and copies every read of `reads` (their files opened in `reader`).
/// @returns the file bytes read; Errc::corrupt naming the tensor, the file and the block
///   on a checksum mismatch (only verified elements were copied) or a file shorter than
///   the metadata says (its true size); storage errors with the path.
Task<std::uint64_t> run_staged_reads(CheckpointReader& reader, std::span<const PlannedRead> reads, CheckpointIo io,
                                     StagedReadOptions options);

}  // namespace corockpt::detail
