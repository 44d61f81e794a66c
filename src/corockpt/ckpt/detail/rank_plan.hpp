#pragma once
/// @file
/// The data-free halves of a save's planning (save_steps.hpp): the plan a rank sends to
/// the coordinator once its files are written, and the coordinator's merge of every
/// rank's plan. write_rank_data and commit_save run them; the planning benchmark
/// (bench/plan_bench.cpp) runs them for thousands of simulated ranks without writing data.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "corockpt/ckpt/data_file_layout.hpp"
#include "corockpt/ckpt/data_file_writer.hpp"
#include "corockpt/ckpt/format/checkpoint_metadata.hpp"
#include "corockpt/ckpt/local_chunks.hpp"

namespace corockpt::detail {

/// A rank's plan: every tensor of `chunks` listed with its dtype and global shape (also
/// those it holds nothing of or does not write), every file of `layout` with its size, and
/// every chunk the files hold with its box, file, byte range and checksums, from
/// `written` (per file of `layout`, per chunk in the file's order: what write_data_file
/// returned, or chunk_placement before any byte is written).
CheckpointMetadata rank_plan(std::span<const LocalChunk> chunks, int world_size, std::uint64_t checksum_block,
                             std::span<const DataFileLayout> layout, std::vector<std::vector<WrittenChunk>> written);

/// The coordinator's merge of every rank's plan (as plan_text made them) into `merged`
/// (world size, meshes, block size, param groups, user), checked: a tensor has one dtype
/// and shape everywhere, its chunks tile it, each object is written once. @returns
/// Errc::io naming a rank that could not write, Errc::internal for a plan that does not
/// parse, Errc::invalid_argument or check_tiling's Errc::corrupt naming the tensor.
Result<CheckpointMetadata> merge_plans(std::span<const std::string> plans, CheckpointMetadata merged);

}  // namespace corockpt::detail
