#pragma once
/// @file
/// Saving a checkpoint: every rank writes the chunks it holds into its own data files
/// (no collective moves data), the coordinator (rank 0) checks the small plans and
/// commits. Collective over the model's world: every rank calls it, with the same `dir`.
///
/// The commit protocol (a crash at any point leaves every earlier checkpoint intact and
/// the partial one recognisable by its name and its missing metadata):
/// 1. rank 0 refuses an existing `dir` (Errc::already_exists: a checkpoint is never
///    overwritten in place; save under a new name, e.g. per step), creates the parent
///    (and its missing ancestors), removes the leftovers of killed saves of `dir`
///    (`dir.tmp-*` nobody owns: temporary_directory.hpp), and creates
///    `dir.tmp-<random id>`, which it holds locked until the save is over; the id is
///    broadcast;
/// 2. every rank writes its data files there (safetensors, from staging images in aligned
///    blocks, many writes in flight), fsyncs them, and sends its plan — its files and
///    chunks with their checksums — to rank 0;
/// 3. rank 0 merges and checks the plans (same dtype and shape everywhere, chunks tiling
///    every tensor), writes and fsyncs `corockpt.metadata.json`, fsyncs the directory,
///    renames it to `dir` and fsyncs the parent;
/// 4. the outcome is broadcast, so every rank returns the same result. On failure rank 0
///    removes the temporary directory.
///
/// The data files follow PyTorch DCP's Hugging Face layout, so
/// `torch.distributed.checkpoint.load(..., storage_reader=HuggingFaceStorageReader(dir))`
/// reads a corockpt checkpoint: `rank<R>-<K>.safetensors` at the top of the directory,
/// at most one chunk per tensor per file (a rank with several chunks of one tensor writes
/// file K for its K-th), `__metadata__` holding `DCP_SHARDING_INFO` (each chunk's
/// offsets), `DCP_VERSION` "1.0" and `format` "pt". Empty chunks are not written.

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "corockpt/ckpt/checkpoint_io.hpp"
#include "corockpt/ckpt/format/checkpoint_metadata.hpp"
#include "corockpt/ckpt/local_chunks.hpp"
#include "corockpt/ckpt/model.hpp"
#include "corockpt/ckpt/temporary_directory.hpp"
#include "corockpt/plugins/device/device.hpp"

namespace corockpt {

/// A value that is not a tensor (PyTorch DCP's pickled leaves), saved whole as these bytes.
struct LocalObject {
  std::string name;
  std::span<const std::byte> bytes;
};

/// Plans kept from one save to the next by whoever saves the same chunks again (an
/// AsyncCheckpointer): each rank's last committed layout, and on rank 0 the tensor index
/// written then. With it, a save of an unchanged layout sends rank 0 a digest and a few
/// checksums per rank instead of its plan, and rank 0 rewrites the index's checksums
/// instead of merging (save_steps.hpp). Opaque; make one per checkpointer per rank.
struct SavePlanCache;
std::shared_ptr<SavePlanCache> make_save_plan_cache();

struct SaveOptions {
  /// Stored as is in the metadata's "user" (step, data-loader state, RNG seeds...).
  nlohmann::json user = nlohmann::json::object();
  std::uint64_t checksum_block = default_checksum_block;
  /// Called on this rank's executor as its data reaches the disk (bytes done, of total).
  std::function<void(std::uint64_t done, std::uint64_t total)> progress;
  /// Called on this rank's executor once its data files are durable (before the plans
  /// go to rank 0): from then on the chunks' memory is no longer read.
  std::function<void()> on_data_written;
  /// The images of this rank's data files, in layout_data_files' order for the chunks,
  /// when the chunks lie in them (a Snapshot's): the files are then written from there
  /// with no staging copy. Empty: through the staging buffers.
  std::vector<std::span<const std::byte>> file_images;
  /// The device the model's memory lies on, for save_checkpoint: its state is first
  /// copied into a snapshot of the device's staging memory (allocated for this save),
  /// then written. Null: save_checkpoint uses the model's own (Model::device).
  /// save_chunks streams chunks in this device's memory through it into the staging
  /// buffers (best allocated by its staging_allocator); without it, it refuses them.
  std::shared_ptr<Device> device;
  /// Streaming (no file_images): each data file holds its chunks unit by unit in this
  /// order (LocalChunk::unit; layout_data_files), and `on_unit_staged(unit)` is called on
  /// this rank's executor once every byte of that unit is in the staging buffers (at once
  /// for a unit with no bytes to write): from then on its memory is no longer read.
  /// AsyncCheckpointer within a staging budget opens the unit's fence there.
  std::vector<std::uint32_t> unit_order;
  std::function<void(std::uint32_t unit)> on_unit_staged;
  /// Values that are not tensors, written by this rank into its objects file; their
  /// bytes must stay valid until the save returns.
  std::vector<LocalObject> objects;
  /// The same for every save of these chunks on this rank (SavePlanCache); null: every
  /// save sends its whole plan.
  std::shared_ptr<SavePlanCache> plan_cache;
};

/// What a save is collective over, and what its metadata records besides the chunks: a
/// Model's (save_scope(model)), or a caller's own (a PyTorch state dict's ranks).
struct SaveScope {
  std::shared_ptr<Communicator> world;
  int rank = 0;
  int world_size = 1;
  std::vector<MeshSpec> meshes;
  nlohmann::json param_groups = nlohmann::json::array();
};

/// The model's world, rank, meshes and param groups.
SaveScope save_scope(const Model& model);

struct SaveReport {
  std::string dir;
  std::uint64_t rank_bytes = 0;   ///< bytes of the data files this rank wrote
  std::size_t rank_files = 0;
  std::uint64_t total_bytes = 0;  ///< every rank's data files (the same on every rank)
  /// On rank 0: the leftovers of killed saves of `dir` (`dir.tmp-*` nobody owned) removed
  /// before this save began, with the space freed, and those kept (in use) and why.
  LeftoverReport leftovers;
};

/// Saves `model`'s state (params, buffers, optimizer states and steps) to `dir`.
/// Thread rules: a coroutine run on the rank's executor; the model's memory must not
/// change until it completes (it is read until this rank's data files are durable:
/// `on_data_written`). For saves that overlap training, use AsyncCheckpointer.
Task<SaveReport> save_checkpoint(Model& model, CheckpointIo io, std::string dir, SaveOptions options);
/// The same with default options. An overload, not a default argument: GCC 12 destroys a
/// temporary with non-trivial members in a co_awaited call twice, so pass options as a
/// named variable (`std::move` it) when you `co_await` with GCC 12.
Task<SaveReport> save_checkpoint(Model& model, CheckpointIo io, std::string dir);

/// The same from chunks this rank holds elsewhere — a snapshot in staging memory — with
/// the model giving the world, the meshes and the param groups.
Task<SaveReport> save_chunks(const Model& model, std::span<const LocalChunk> chunks, CheckpointIo io,
                             std::string dir, SaveOptions options = {});
/// The same for chunks of the caller's own, over `scope`'s world.
Task<SaveReport> save_chunks(const SaveScope& scope, std::span<const LocalChunk> chunks, CheckpointIo io,
                             std::string dir, SaveOptions options);

/// The param groups as PyTorch's optimizer state dict lists them (hyperparameters and
/// the FQNs of the params with optimizer state), for the metadata.
nlohmann::json param_groups_json(const ModelSpec& spec);

}  // namespace corockpt
