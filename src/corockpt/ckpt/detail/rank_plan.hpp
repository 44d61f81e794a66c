#pragma once
/// @file
/// The data-free halves of a save's planning (save_steps.hpp): what a rank records of
/// the data it wrote, and the coordinator's merge of every rank's plan into the tensor
/// index (format/chunk_index.hpp). write_rank_data and commit_save run them; the planning
/// benchmark (bench/plan_bench.cpp) runs them for thousands of simulated ranks.
///
/// A plan is what crosses to the coordinator, and it is built to stay small and quick to
/// merge at thousands of ranks: no checksums and no byte ranges (those stay in the rank's
/// own index, beside its files), the digest of its layout (computed by the rank, so the
/// coordinator does not hash every plan again), and per tensor the rank lists, its 64-bit name hash,
/// dtype, shape and the runs of the chunks it wrote (with the location of a chunk that is
/// the whole tensor: loads find those without any rank's index). The name travels once: from
/// the rank that wrote the tensor's first element (from every rank listing a tensor
/// without elements). So the bytes to the coordinator grow with the chunks, never with
/// ranks x tensors, and the merge is one hash lookup and one run extension per chunk.

#include <cstdint>
#include <map>
#include <span>
#include <string_view>
#include <string>
#include <vector>

#include "corockpt/ckpt/data_file_layout.hpp"
#include "corockpt/ckpt/data_file_writer.hpp"
#include "corockpt/ckpt/format/checkpoint_metadata.hpp"
#include "corockpt/ckpt/format/chunk_index.hpp"
#include "corockpt/ckpt/local_chunks.hpp"

namespace corockpt::detail {

/// What a rank wrote: its index (to write beside its files) and its plan (to send).
struct RankPlan {
  RankIndex index;
  std::string plan;
  /// Of the plan's layout (its tensors and runs, without checksums): equal from save to
  /// save of the same chunks, so that a checkpointer can send cached_plan(plan) instead.
  std::uint64_t layout_digest = 0;
};

/// The objects a rank wrote (SaveOptions::objects) and their file.
struct RankObjects {
  std::map<std::string, ObjectRecord> objects;
  std::string file;  ///< empty when there are none
  std::uint64_t file_size = 0;
};

/// `rank`'s plan and index for `chunks` laid out as `layout` (every tensor of `chunks`
/// listed, also those it holds nothing of or does not write), from `written` (per file
/// of `layout`, per chunk in the file's order: what write_data_file returned, or
/// chunk_placement before any byte is written).
RankPlan rank_plan(std::span<const LocalChunk> chunks, int rank, std::string save_id,
                   std::span<const DataFileLayout> layout, std::vector<std::vector<WrittenChunk>> written,
                   RankObjects objects);

/// The save's id, from its temporary directory (`<dir>.tmp-<id>`; the whole name if it
/// has no such suffix): what ties each rank's index to the header.
std::string save_id_of(const std::string& tmp);

/// A plan that stands for `plan` at a coordinator holding its layout from an earlier
/// save (PlanCache): the layout's digest and what changes from save to save (sizes,
/// objects, the checksums of tensors saved whole), a few bytes where the plan is
/// hundreds of KiB.
std::string cached_plan(const std::string& plan);

/// Every rank's plans merged.
struct MergedPlan {
  std::vector<TensorEntry> tensors;  ///< in no particular order
  std::map<std::string, ObjectRecord> objects;
  std::map<std::string, std::uint64_t> object_files;  ///< the files holding objects, with their sizes
  std::uint64_t data_bytes = 0;  ///< every rank's files
  std::vector<std::uint64_t> digests;  ///< per rank: its layout's digest (0: no plan)
  /// Per rank: the tensors (into `tensors`) it saved whole, in its plan's order.
  std::vector<std::vector<std::uint32_t>> whole_of_rank;
};

/// The coordinator's merge of the plans of a world of `world_size` ranks (as plan_text
/// made them, in rank order; a rank with nothing to say may be left out), checked: a
/// tensor has one dtype and shape everywhere, its chunks tile it, each object is written
/// once and is no tensor. @returns Errc::io naming a rank that could not write,
/// Errc::internal for a plan that does not parse, Errc::invalid_argument or check_tiling's
/// Errc::corrupt naming the tensor.
/// @param threads merge that many contiguous ranges of the plans at once, then join them
/// (the result does not depend on it): at thousands of ranks the merge is tens of
/// millions of runs, and the coordinator's cores are otherwise idle.
Result<MergedPlan> merge_plans(std::span<const std::string> plans, int world_size, unsigned threads = 1);

/// What a coordinator keeps from its last committed save (plan caching): every rank's
/// layout digest, and the tensor index it wrote with where each rank's whole tensors'
/// checksums lie in it. A save whose ranks all send cached plans of the same layouts
/// reuses the index with the new checksums: no merge, no tiling check, no encoding.
struct PlanCache {
  std::vector<std::uint64_t> digests;
  std::string index;
  std::vector<std::vector<std::uint32_t>> crc_slots;
};

/// What commit_save writes: the tensor index and the header's objects.
struct CommitPlan {
  std::string index;
  std::map<std::string, ObjectRecord> objects;
  std::map<std::string, std::uint64_t> object_files;
  std::uint64_t data_bytes = 0;
  bool reused = false;  ///< from the cache
  std::vector<std::uint64_t> digests;                 ///< for remember
  std::vector<std::vector<std::uint32_t>> crc_slots;  ///< for remember
};

/// The tensor index of the plans (with the param groups): merged and encoded when every
/// plan is whole, else (some cached) `cache`'s index with every rank's new checksums,
/// after checking each plan's layout digest against it. @returns merge_plans's errors;
/// Errc::internal when cached plans cannot be used (no cache, another world, a changed
/// layout): the save fails, and its callers forget their cached plans, so the next one
/// sends them whole. Merges on up to every core, one per 256 plans.
Result<CommitPlan> plan_commit(std::span<const std::string> plans, int world_size, std::string_view param_groups_json,
                               const PlanCache* cache);

/// After the commit of `committed`: `cache` holds its layouts.
void remember(PlanCache& cache, const CommitPlan& committed);

}  // namespace corockpt::detail
