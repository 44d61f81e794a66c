#pragma once
/// @file
/// `Engine`: what the Python package asks of corockpt, in plain C++ (no Python here):
/// one runtime, storage engine and staging pool per process, and the steps of saves and
/// loads of chunks that lie in memory the caller owns (torch tensors, given as
/// pointers). Every call blocks its caller until done; the Python bindings release the
/// GIL around them.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "corockpt/ckpt/checkpoint_io.hpp"
#include "corockpt/ckpt/checkpoint_reader.hpp"
#include "corockpt/ckpt/local_chunks.hpp"
#include "corockpt/ckpt/temporary_directory.hpp"
#include "corockpt/runtime/buffer_pool.hpp"
#include "corockpt/runtime/runtime.hpp"

namespace corockpt::python {

/// A tensor's chunk as the caller describes it: `bytes` bytes at `address`, row-major,
/// holding the box (`offsets`, `sizes`) of a tensor of `shape`; `unit` is the snapshot
/// fence it sits behind (LocalChunk::unit; saves ignore it, loads too).
struct ChunkSpec {
  std::string name;
  std::string dtype;  ///< PyTorch's name without "torch.": "float32", "bfloat16", ...
  std::vector<std::int64_t> shape;
  std::vector<std::int64_t> offsets;
  std::vector<std::int64_t> sizes;
  std::uintptr_t address = 0;
  std::uint64_t bytes = 0;
  bool on_cuda = false;  ///< the bytes lie in CUDA device memory
  std::uint32_t unit = 0;
};

/// A value that is not a tensor, as bytes.
struct ObjectSpec {
  std::string name;
  std::string bytes;
};

class Engine {
 public:
  /// @param staging_bytes the staging pool (buffers of 8 MiB, at least two).
  static Result<std::unique_ptr<Engine>> create(std::uint64_t staging_bytes);
  ~Engine();

  Runtime& runtime() { return *runtime_; }
  CheckpointIo io() { return {runtime_.get(), storage_.get(), staging_.get()}; }

  /// save_steps.hpp's steps. begin_save keeps the temporary directory's lock in the
  /// engine (so as long as this process lives) until commit_save succeeds or
  /// abandon_save is called for it: the Python writer begins and commits in different
  /// calls, and no cleaner may remove the directory in between.
  /// @returns the temporary directory's path.
  Result<std::string> begin_save(const std::string& dir);
  /// @returns the plan for the coordinator (binary: detail/rank_plan.hpp).
  Result<std::string> write_rank_data(const std::string& tmp, int rank, const std::vector<ChunkSpec>& chunks,
                                      const std::vector<ObjectSpec>& objects, std::uint64_t checksum_block);
  /// @param user_json the metadata's "user" object, as JSON text.
  Result<std::uint64_t> commit_save(const std::vector<std::string>& plans, int world_size, const std::string& user_json,
                                    std::uint64_t checksum_block, const std::string& tmp, const std::string& dir);
  Result<void> abandon_save(const std::string& tmp);

  /// `dir` opened for reading: its metadata parsed and checked once (partial checkpoints
  /// are refused), its files opened as they are first read.
  Result<std::unique_ptr<class Reader>> open(const std::string& dir);
  /// The newest committed `<root>/step-<N>`, or "" when there is none.
  Result<std::string> latest(const std::string& root);

 private:
  Engine() = default;

  std::unique_ptr<Runtime> runtime_;  // first: destroyed last
  std::unique_ptr<Storage> storage_;
  std::unique_ptr<BufferPool> staging_;
  std::mutex saves_mutex_;
  std::map<std::string, TemporaryDirectory> live_saves_;  // by path: begun, not yet committed or abandoned
};

/// A checkpoint open for reading (Engine::open): what corockpt.torch.StorageReader holds
/// from read_metadata to read_data, so the metadata is read once per load.
class Reader {
 public:
  Reader(Engine& engine, std::unique_ptr<CheckpointReader> reader) : engine_(engine), reader_(std::move(reader)) {}
  ~Reader();

  /// The metadata as JSON text.
  std::string metadata_json() const;
  /// Fills the chunks (resharding, dtype conversion, every block checked).
  /// @returns the names the checkpoint lacks, with `strict` false (an error with it).
  Result<std::vector<std::string>> load(const std::vector<ChunkSpec>& chunks, bool strict);
  /// The bytes of the objects `names`, checked.
  Result<std::vector<std::string>> read_objects(const std::vector<std::string>& names);

 private:
  Engine& engine_;
  std::unique_ptr<CheckpointReader> reader_;
};

/// The chunks `specs` describe, as corockpt's LocalChunks (each written by this rank).
/// @returns Errc::invalid_argument for an unknown dtype or a byte count that does not
///   match the box.
Result<std::vector<LocalChunk>> to_local_chunks(const std::vector<ChunkSpec>& specs);

}  // namespace corockpt::python
