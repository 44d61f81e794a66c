#pragma once
/// @file
/// Reading a version 3 checkpoint's indexes (format/chunk_index.hpp) into the
/// CheckpointMetadata view: every tensor with every chunk for the tools, or for a load
/// only the tensors of its targets and the chunks they overlap, from the tensor index
/// and the indexes of just the ranks that wrote those chunks: what a rank of a world of
/// thousands reads to plan its load is the tensor index (its size grows with the
/// tensors, not the ranks) and a few rank indexes.

#include <cstdint>
#include <span>
#include <string>

#include "corockpt/ckpt/checkpoint_io.hpp"
#include "corockpt/ckpt/format/checkpoint_metadata.hpp"
#include "corockpt/ckpt/local_chunks.hpp"

namespace corockpt::detail {

/// Reads all of the file `path` (at most `max_bytes`, else Errc::corrupt naming `what`),
/// in one read when it has the `expected` size. @returns Errc::not_found when there is
/// none; storage errors with the path.
Task<std::string> read_whole_file(CheckpointIo io, std::string path, std::uint64_t max_bytes, std::string what,
                                  std::uint64_t expected = 0);

/// `header` (a version 3 header read from `dir`) with every tensor and every chunk, and
/// every file with its size. @returns Errc::corrupt naming the index file and what is
/// wrong (a checksum, a rank index of another save, a chunk the tensor index names that
/// its rank's index lacks, a byte range that does not hold its box); read errors.
Task<CheckpointMetadata> read_all_indexes(CheckpointIo io, std::string dir, CheckpointMetadata header);

/// `header` with, of the tensors `targets` name, those the checkpoint has, each with the
/// saved chunks the targets of its shape overlap, the files they lie in, and
/// `partial` set; each such tensor's tiling is checked on its runs. Errors as
/// read_all_indexes, and check_tiling's.
Task<CheckpointMetadata> read_indexes_for(CheckpointIo io, std::string dir, CheckpointMetadata header,
                                          std::span<const LocalChunk> targets);

}  // namespace corockpt::detail
