#pragma once
/// @file
/// The steps of a save (save.hpp's commit protocol) for callers that run the exchanges
/// between them themselves: PyTorch DCP's StorageWriter, whose planning gathers and
/// scatters through torch.distributed. save_chunks runs the same steps over a
/// Communicator.
///
/// 1. `begin_save` on the coordinator: the temporary directory, whose path every rank
///    needs, and its lock, which the coordinator holds until step 3 is over;
/// 2. `write_rank_data` on every rank: its data files there, durable; its plan;
/// 3. `commit_save` on the coordinator with every rank's plan (or `abandon_save`).

#include <cstdint>
#include <span>
#include <string>

#include "corockpt/ckpt/checkpoint_io.hpp"
#include "corockpt/ckpt/detail/rank_plan.hpp"
#include "corockpt/ckpt/format/checkpoint_metadata.hpp"
#include "corockpt/ckpt/local_chunks.hpp"
#include "corockpt/ckpt/save.hpp"
#include "corockpt/ckpt/temporary_directory.hpp"

namespace corockpt {

/// The name of rank `rank`'s file of objects.
std::string objects_file_name(int rank);

/// Step 1 (coordinator): refuses an existing `dir` (Errc::already_exists), creates its
/// parent (and its missing ancestors), removes the leftovers of killed saves of `dir`
/// (`<dir>.tmp-*` nobody owns: temporary_directory.hpp) and creates
/// `<dir>.tmp-<random id>`, locked.
/// @returns the temporary directory (`path`), its lock and the leftovers removed. Keep it
///   until commit_save or abandon_save has returned: while its lock is held, no cleaner
///   removes the directory.
Task<TemporaryDirectory> begin_save(CheckpointIo io, std::string dir);

/// Step 2 (every rank): writes this rank's chunks (those it is the writer of; every
/// chunk's tensor is listed) into its data files in `tmp`, its objects
/// (SaveOptions::objects) into objects_file_name(rank) and what it wrote into its index
/// (rank_index_file_name), makes them durable, and returns its plan for the coordinator
/// (detail/rank_plan.hpp: binary, small). Of `options`, the checksum block, the progress
/// callback, the file images, the unit order and its callback, the device and the
/// objects are used.
struct RankData {
  std::string plan;
  std::uint64_t layout_digest = 0;  ///< detail::RankPlan's
  std::uint64_t bytes = 0;  ///< in its data and object files
  std::size_t files = 0;    ///< data and object files
};
Task<RankData> write_rank_data(CheckpointIo io, std::string tmp, int rank, std::span<const LocalChunk> chunks,
                               const SaveOptions& options);

/// A plan as it travels to the coordinator: the plan, or "!" and why this rank could not
/// write.
std::string plan_text(const Result<RankData>& data);

/// Step 3 (coordinator): merges the plans (every rank's, as plan_text made them), checks
/// them (a tensor with one dtype and shape everywhere, chunks tiling it, each object
/// written once), writes the tensor index and then `corockpt.metadata.json` (`base`'s
/// world size, meshes, block size, param groups and user, as format version 3) and
/// renames `tmp` to `dir`. @returns every rank's data bytes. A rank's failure is
/// returned as Errc::io naming the rank.
/// With `cache` (rank 0's part of a SavePlanCache), plans may be cached ones
/// (detail::plan_commit) and the cache holds this commit's layouts after it.
Task<std::uint64_t> commit_save(CheckpointIo io, std::span<const std::string> plans, CheckpointMetadata base,
                                std::string tmp, std::string dir, detail::PlanCache* cache = nullptr);

/// After a failure (coordinator): removes `tmp` (a crash leaves it: verify says partial).
Task<void> abandon_save(CheckpointIo io, std::string tmp);

}  // namespace corockpt
