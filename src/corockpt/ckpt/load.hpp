#pragma once
/// @file
/// Loading a checkpoint into a model registered on any world size, mesh or layout:
/// each rank intersects the boxes it holds with the saved chunks, reads only those byte
/// ranges (whole checksum blocks around them, every block's CRC-32C checked), converts
/// dtypes where the model's differ (as PyTorch's `copy_`), and copies the overlaps into
/// place. No collective (unless LoadOptions::replicas asks for one): ranks load
/// independently, so any rank count can read any checkpoint, and expert params move
/// between expert-parallel layouts.
///
/// Reads go through the staging buffers (CheckpointIo::staging, required): O_DIRECT where
/// the file system takes it, neighbouring ranges merged into reads of up to a buffer,
/// `concurrency` in flight across files, each verified and copied (or converted) into its
/// targets on a worker while later reads are in flight (detail/staged_reads.hpp). Extra
/// memory is the pool's buffers plus, for chunks in device memory, one 64 MiB round of
/// host memory; a checksum block longer than a buffer is read alone into memory of its
/// own. Whatever the checkpoint's size.
///
/// Keys the checkpoint has and the model does not need are not read. A key the model
/// needs and the checkpoint lacks, or a global shape that differs, is an error naming
/// them with `strict`, and is listed in the report (the model's values left as they
/// were) without.

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "corockpt/ckpt/checkpoint_io.hpp"
#include "corockpt/ckpt/checkpoint_reader.hpp"
#include "corockpt/ckpt/local_chunks.hpp"
#include "corockpt/ckpt/model.hpp"
#include "corockpt/plugins/comm/communicator.hpp"
#include "corockpt/plugins/device/device.hpp"

namespace corockpt {

struct LoadOptions {
  bool strict = true;
  /// Reads (and copies) in flight on this rank.
  int concurrency = 16;
  /// Called on this rank's executor as data arrives (bytes done, of total).
  std::function<void(std::uint64_t done, std::uint64_t total)> progress;
  /// The device the model's memory lies on (chunks of space `cuda`): they are loaded
  /// into host copies, then copied to the device. Without it such chunks are an error;
  /// load_checkpoint uses the model's own (Model::device) when it is null.
  std::shared_ptr<Device> device;
  /// Replicated chunks read once per group of replicas: ranks of this communicator that
  /// load the same box of a tensor (HSDP's replicas, buffers, Adam's `step`) elect one of
  /// them to read it, and it passes the bytes on to the others over the communicator
  /// (detail/replica_reads.hpp). A collective: every rank of it loads with it. Chunks in
  /// a memory the communicator does not move (device memory over MPI) are read by each
  /// replica. Null: every rank reads all it loads (no collective at all).
  std::shared_ptr<Communicator> replicas;
};

struct LoadReport {
  std::vector<std::string> missing;     ///< needed, not in the checkpoint (not strict)
  std::vector<std::string> mismatched;  ///< in the checkpoint with another global shape (not strict)
  std::uint64_t bytes_read = 0;
  std::int64_t elements = 0;  ///< elements filled on this rank
  int saved_world_size = 0;
  nlohmann::json user;  ///< the save's user blob
};

/// Fills `model` (its params, buffers, optimizer states and steps) from `dir`.
/// Thread rules: a coroutine run on the rank's executor; it writes the model's memory, so
/// nothing else touches the model's tensors until it completes.
Task<LoadReport> load_checkpoint(Model& model, CheckpointIo io, std::string dir, LoadOptions options);
/// The same with default options (an overload, not a default argument: see
/// save_checkpoint on GCC 12).
Task<LoadReport> load_checkpoint(Model& model, CheckpointIo io, std::string dir);

/// The same into chunks this rank holds (what LocalChunks::of lists); steps stay in the
/// chunks (LocalChunks::store_steps moves them into the model).
Task<LoadReport> load_chunks(std::span<LocalChunk> chunks, CheckpointIo io, std::string dir, LoadOptions options = {});

/// The same from a checkpoint already open (consolidate reads tensor after tensor).
Task<LoadReport> load_from(CheckpointReader& reader, std::span<LocalChunk> chunks, CheckpointIo io,
                           LoadOptions options = {});

}  // namespace corockpt
