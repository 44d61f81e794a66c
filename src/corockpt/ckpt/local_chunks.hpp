#pragma once
/// @file
/// The chunks of a checkpoint one rank holds in memory: every tensor of the model and
/// optimizer state this rank has, by its checkpoint name, cut into boxes that are each
/// contiguous in this rank's memory. Saving writes them; loading fills them.
///
/// Names, as PyTorch's flattened optimizer state dict: a param's or buffer's FQN;
/// `state.<fqn>.<state>` for an optimizer state (`exp_avg`, `exp_avg_sq`,
/// `momentum_buffer`); `state.<fqn>.step` for Adam's step, a 0-d float32 tensor.
///
/// - A `per_param` shard is one box (its Shard(0) rows); a `flat` unit's slice holds a
///   flat range of each param it meets, i.e. the few boxes flat_range_boxes gives, each
///   contiguous in the slice — saved as they lie, no communication.
/// - Replicas (HSDP's replicate dim, buffers on every holder of their unit, Adam's step
///   on every holder of its param) are written once: among the ranks holding the same
///   chunk, the one at fnv1a32(name) mod their count is its writer, which spreads the
///   writing over the replicas with no communication. `writer` says if this rank is it.
/// - A tensor this rank holds nothing of (a rank past the end of a short tensor) is
///   listed with an empty box, so that every rank knows every tensor it is part of.

#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <vector>

#include "corockpt/ckpt/box.hpp"
#include "corockpt/ckpt/model.hpp"

namespace corockpt {

struct LocalChunk {
  std::string name;
  DType dtype = DType::float32;
  std::vector<std::int64_t> shape;  ///< the global shape
  Box box;
  std::span<std::byte> bytes;  ///< the box's elements, row-major, in this rank's memory
  /// Where `bytes` lie: `cuda` memory is never read here, only copied through a Device.
  MemorySpace space = MemorySpace::host;
  bool writer = false;         ///< this rank writes it when saving
  ParamSlot* step_of = nullptr;  ///< Adam's step: the slot it belongs to (see store_steps)
  /// The unit its optimizer steps it with: its Model::instances() index (LocalChunks::of);
  /// chunks a caller describes choose their own (0: one unit). Snapshots copy, and open
  /// per-unit fences, unit by unit (AsyncCheckpointerOptions::step_order).
  std::uint32_t unit = 0;
  /// Captured when a save is requested (AsyncCheckpointer::async_save copies it before
  /// returning), not behind its unit's snapshot fence: the training loop's forward changes
  /// it (a buffer with ParamSpec::forward_mutates, set by LocalChunks::of; chunks a caller
  /// describes say so themselves). Only the writer's chunks are captured.
  bool at_request = false;
};

class LocalChunks {
 public:
  /// Lists `model`'s chunks on its rank, in registration order (per param: the value,
  /// then each state, then the step). @returns unit_placement's errors.
  static Result<LocalChunks> of(Model& model);
  /// Chunks a caller describes itself (tensors of its own: a PyTorch state dict), with no
  /// Adam steps of a model to mirror.
  static LocalChunks from(std::vector<LocalChunk> chunks);

  std::vector<LocalChunk>& chunks() { return chunks_; }
  const std::vector<LocalChunk>& chunks() const { return chunks_; }
  /// Adam's steps live in the model as numbers; their chunks are float32 copies. After
  /// a load has filled the chunks, this writes them back into the params' slots.
  void store_steps();
  /// The other way: copies the params' current steps into their chunks (before a save
  /// of a model that has stepped since `of`).
  void load_steps();

 private:
  std::vector<LocalChunk> chunks_;
  std::deque<float> steps_;  // a deque: adding never moves a step a chunk points at
};

/// 32-bit FNV-1a over the bytes of `text`.
std::uint32_t fnv1a32(std::string_view text);

}  // namespace corockpt
