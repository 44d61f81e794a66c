#pragma once
/// @file
/// `verify_checkpoint`: everything that can be checked about a checkpoint directory
/// without a model, every problem reported with its file and tensor (never only the
/// first): the directory is not a partial save; the metadata parses and validates; each
/// tensor's chunks tile its global shape (no gap, no overlap); every data file exists and
/// has the recorded size (a wrong one is reported with its true size beside the recorded
/// one, "the file is 660 bytes, shorter than the metadata's 1320", found by a binary
/// search of one-byte reads, so a truncated copy is told from a damaged one); each data
/// file's safetensors header parses and agrees with the metadata (names, dtypes, shapes,
/// byte ranges, DCP sharding offsets, nothing extra, nothing missing); every checksum
/// block of every chunk matches. Files are opened regular_only (a FIFO or a device is a
/// problem, never a hang), and every read is bounded by the metadata's sizes or the size
/// search.
///
/// Beyond what `load` needs, what another reader would trip on:
/// - meshes that contradict the world size. A recorded mesh is over ranks
///   0..world_size-1 (MeshSpec; every mesh of a model spans its world), so one whose
///   shape holds another number of ranks is reported, and so is one without dims, with
///   an empty or repeated dim name, or sharing its name with another (DeviceMesh refuses
///   those). Only reported: `load` does not use the meshes (it reshards by boxes), so
///   parsing accepts them and such a checkpoint still loads. (No chunk records a rank.)
/// - every `*.safetensors` entry of the directory that the metadata's `files` does not
///   list: PyTorch's HuggingFaceStorageReader reads every one, so it would change what
///   PyTorch loads. Other entries (notes, an index) change nothing a reader sees and are
///   not reported.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "corockpt/ckpt/checkpoint_io.hpp"

namespace corockpt {

struct VerifyProblem {
  std::string file;    ///< the file it is about (empty for the directory)
  std::string tensor;  ///< the tensor it is about (empty if none)
  std::string message;
};

struct VerifyReport {
  std::vector<VerifyProblem> problems;
  std::size_t files = 0;
  std::size_t tensors = 0;
  std::size_t chunks = 0;
  std::size_t objects = 0;
  std::uint64_t bytes_checked = 0;  ///< data whose checksums were computed
  bool ok() const { return problems.empty(); }
};

/// Never fails for what it finds (that is the report); fails only if it cannot run.
Task<VerifyReport> verify_checkpoint(CheckpointIo io, std::string dir,
                                     std::function<void(std::uint64_t done, std::uint64_t total)> progress = {});

}  // namespace corockpt
