#pragma once
/// @file
/// `CheckpointReader`: a committed checkpoint opened for reading — its metadata parsed
/// and checked, and byte ranges of its chunks read with every checksum block they touch
/// verified. Load, verify and consolidate read through it.
///
/// A partial checkpoint is never opened: a directory named `*.tmp-*` (a save in
/// progress or interrupted) or one without `corockpt.metadata.json` is refused.

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "corockpt/ckpt/checkpoint_io.hpp"
#include "corockpt/ckpt/format/checkpoint_metadata.hpp"
#include "corockpt/ckpt/local_chunks.hpp"

namespace corockpt {

/// Whether a directory name is a save in progress or interrupted (`<dir>.tmp-<id>`).
bool is_partial_checkpoint_name(std::string_view path);

/// Reads and parses `dir`'s metadata file, and for format version 3 its indexes: every
/// tensor and chunk (detail/index_reads.hpp; no other check).
/// @returns Errc::not_found when there is none, parse_checkpoint_metadata's errors with
///   the metadata file's path, the indexes' errors.
Task<CheckpointMetadata> read_checkpoint_metadata(CheckpointIo io, std::string dir);

class CheckpointReader {
 public:
  /// Refuses partial checkpoints (Errc::invalid_argument) and reads the metadata.
  static Task<std::unique_ptr<CheckpointReader>> open(CheckpointIo io, std::string dir);
  /// The same for a load of `targets`: of a version 3 checkpoint only their tensors and
  /// the chunks they overlap, read from the tensor index and the indexes of the ranks
  /// that wrote those (metadata().partial; a few MiB where all would be GiB).
  static Task<std::unique_ptr<CheckpointReader>> open_for(CheckpointIo io, std::string dir,
                                                          std::span<const LocalChunk> targets);

  /// A reader of `dir` described by `metadata`, with no check of the directory's name
  /// (verify inspects partial checkpoints too).
  static std::unique_ptr<CheckpointReader> with_metadata(CheckpointIo io, std::string dir, CheckpointMetadata metadata) {
    return std::unique_ptr<CheckpointReader>(new CheckpointReader(io, std::move(dir), std::move(metadata)));
  }

  const std::string& dir() const { return dir_; }
  const CheckpointMetadata& metadata() const { return metadata_; }

  /// Opens the data files `files` (names from the metadata), all at once, before reads:
  /// O_DIRECT where the file system takes it (said once a process on stderr where not).
  Task<void> open_files(std::set<std::string> files);
  /// The data files opened so far, by name.
  const std::map<std::string, File>& files() const { return files_; }
  /// An opened data file (nullptr if open_files did not open it).
  File* file(const std::string& name) {
    auto it = files_.find(name);
    return it == files_.end() ? nullptr : &it->second;
  }

  /// Bytes [from, to) of `chunk`'s data (offsets relative to the chunk's first byte)
  /// of the tensor `name`, read with the whole checksum blocks around them and each
  /// block's CRC-32C checked (on a worker), into memory of their own (verify and
  /// objects; loads read through the staging buffers instead, detail/staged_reads.hpp).
  /// @returns Errc::corrupt naming the tensor, the file and the block on a mismatch,
  /// Errc::corrupt when the file is shorter than the metadata says, storage errors with
  /// the path.
  Task<std::vector<std::byte>> read(const std::string& name, const ChunkRecord& chunk, std::uint64_t from,
                                    std::uint64_t to);
  /// The bytes of the object `name` (opening its file if needed), every checksum block
  /// checked. @returns Errc::not_found when the checkpoint has no such object; read's
  /// errors.
  Task<std::vector<std::byte>> read_object(const std::string& name);

 private:
  CheckpointReader(CheckpointIo io, std::string dir, CheckpointMetadata metadata)
      : io_(io), dir_(std::move(dir)), metadata_(std::move(metadata)) {}

  CheckpointIo io_;
  std::string dir_;
  CheckpointMetadata metadata_;
  std::map<std::string, File> files_;
};

}  // namespace corockpt
