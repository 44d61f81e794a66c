#pragma once
/// @file
/// `consolidate_checkpoint`: a checkpoint's full tensors in standard safetensors files,
/// as Hugging Face's `save_pretrained` shards them — `model-00001-of-0000N.safetensors`
/// of at most `max_file_bytes` each (a bigger tensor gets a file of its own) and
/// `model.safetensors.index.json` ({"metadata": {"total_size": ...}, "weight_map":
/// {name: file}}) — so any safetensors reader opens the result. Tensors in name order;
/// optimizer states (`state.*`) only when asked for. The output directory is committed
/// like a checkpoint (never overwritten, all or nothing).
///
/// It streams: each output file is written in windows (32 MiB by default), one filled
/// from the checkpoint through the load's staged reads (load.hpp) while the one before
/// it is written with the same engine (O_DIRECT where the file system takes it, 4 MiB
/// writes in flight at once), so a tensor of any size passes through without being held
/// whole. Memory: the staging pool (CheckpointIo::staging) plus two windows (64 MiB by
/// default) plus the metadata, whatever the model's size.

#include <cstdint>
#include <functional>
#include <string>

#include "corockpt/ckpt/checkpoint_io.hpp"

namespace corockpt {

struct ConsolidateOptions {
  bool optimizer_states = false;
  /// Only the tensors whose names start with it, named without it: "model." turns a
  /// checkpoint of DCP's flattened {"model": ..., "optim": ...} into a Hugging Face model
  /// (`model.layers.0...`, not `model.model.layers.0...`). Empty: every tensor, as named.
  std::string strip_prefix;
  std::uint64_t max_file_bytes = 5'000'000'000;  ///< save_pretrained's default "5GB"
  /// Bytes of an output file filled and written at a time (two windows are in memory):
  /// a multiple of 4096.
  std::uint64_t window_bytes = 32ull << 20;
  std::function<void(std::uint64_t done, std::uint64_t total)> progress;
};

struct ConsolidateReport {
  std::size_t tensors = 0;
  std::size_t files = 0;
  std::uint64_t bytes = 0;  ///< tensor data written (the index's total_size)
};

Task<ConsolidateReport> consolidate_checkpoint(CheckpointIo io, std::string dir, std::string out,
                                               ConsolidateOptions options = {});

}  // namespace corockpt
