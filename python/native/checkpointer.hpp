#pragma once
/// @file
/// `Checkpointer`: the C++ AsyncCheckpointer as the Python AsyncCheckpointer drives it —
/// created from the first save's chunks, over a world that is the Python channel (or a
/// world of one), each save bringing its chunks and objects. No Python here but the
/// channel object it is given.

#include <nanobind/nanobind.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "corockpt/ckpt/async_checkpointer.hpp"
#include "engine.hpp"

namespace corockpt::python {

struct CheckpointerSettings {
  std::string root;
  int rank = 0;
  int world_size = 1;
  int keep_last = 0;
  std::string when_busy = "wait";
  std::uint64_t staging_budget = 0;
  std::chrono::milliseconds deadline{60000};
  /// The CUDA device the state's CUDA tensors lie on (-1: none), and the loop's stream
  /// (a cudaStream_t; 0: the legacy default stream) the snapshot is ordered after.
  int cuda_device = -1;
  std::uintptr_t cuda_stream = 0;
  /// AsyncCheckpointerOptions::step_order: the units (ChunkSpec::unit) in the order the
  /// loop steps them, each once; empty: ascending.
  std::vector<std::uint32_t> step_order;
};

class Checkpointer {
 public:
  /// @param channel a corockpt._channel.GlooChannel, or None for a world of one.
  static Result<std::unique_ptr<Checkpointer>> create(Runtime& runtime, CheckpointIo io,
                                                      const CheckpointerSettings& settings,
                                                      nanobind::object channel, const std::vector<ChunkSpec>& chunks);
  ~Checkpointer();

  Result<SaveHandle> async_save(std::int64_t step, const std::string& user_json, const std::vector<ChunkSpec>& chunks,
                                std::vector<std::pair<std::string, std::string>> objects);
  Result<void> stop(std::chrono::milliseconds deadline);
  CheckpointerStats stats() const { return checkpointer_->stats(); }

 private:
  Checkpointer() = default;
  std::shared_ptr<Communicator> world_;
  std::unique_ptr<AsyncCheckpointer> checkpointer_;
};

}  // namespace corockpt::python
