#pragma once
/// @file
/// A run of chunks: the chunks of one tensor that step evenly along one dim, written by
/// ranks that step evenly too. FSDP's Shard(0) cuts a tensor into rows [k*c, (k+1)*c) on
/// group rank k, so a tensor sharded over 8192 ranks, or an expert's over the 128 ranks
/// of its data-parallel dim (every 64th rank), is one run: its record stays as small at
/// 8192 ranks as at 8, where a list of chunks would grow with the ranks. Chunks that do
/// not step evenly (a flat unit's boxes, a tensor cut in two dims) are runs of one cell.
///
/// Cell j of a run (0 <= j < count) covers, along `dim`, [start + j*step,
/// min(start + (j+1)*step, shape[dim])) (only the last cell of a tensor is cut short), and
/// `rest_offsets` / `rest_sizes` along every other dim, in order; rank owner + j*owner_step
/// wrote it. A 0-d tensor's one chunk is the run {dim 0, start 0, step 1, count 1}.

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "corockpt/ckpt/box.hpp"

namespace corockpt {

namespace detail {
class ByteWriter;
class ByteReader;
}  // namespace detail

struct ChunkRun {
  std::uint32_t dim = 0;
  std::int64_t start = 0;
  std::int64_t step = 1;
  std::int64_t count = 1;
  std::int32_t owner = 0;
  std::int32_t owner_step = 0;
  std::vector<std::int64_t> rest_offsets;
  std::vector<std::int64_t> rest_sizes;

  friend bool operator==(const ChunkRun&, const ChunkRun&) = default;
};

/// The run of the one non-empty chunk `box` of a tensor of `shape`, written by `owner`:
/// it steps along the first dim the box does not span (dim 0 if it spans them all).
ChunkRun run_of(const Box& box, std::span<const std::int64_t> shape, int owner);

/// Appends `next` to `run` when it continues it (the same dim and rest, its first cell
/// where `run`'s next would be, the same step — or one cell cut short by the shape's end
/// — and its writers continuing `run`'s). @returns whether it did.
bool extend_run(ChunkRun& run, const ChunkRun& next, std::span<const std::int64_t> shape);
/// extend_run for runs the caller knows have the same dim and rest, in a dim of `extent`.
bool continue_run(ChunkRun& run, const ChunkRun& next, std::int64_t extent);

/// Cell `j`'s box. Precondition: 0 <= j < run.count.
Box cell_box(const ChunkRun& run, std::int64_t j, std::span<const std::int64_t> shape);
inline int cell_owner(const ChunkRun& run, std::int64_t j) {
  return static_cast<int>(run.owner + j * run.owner_step);
}

/// The cells [first, last) of `run` that overlap `box` (a box of the run's tensor): none
/// when the box misses the run's other dims, else those its extent along the run's dim
/// meets.
std::pair<std::int64_t, std::int64_t> cells_along(const ChunkRun& run, const Box& box);

/// Whether the runs are well formed for `shape` (dims, rests and cells inside it, writers
/// non-negative and below `world_size`, no overflow): what a reader checks before it
/// trusts a run read from a file. @returns what is wrong, or an empty string.
std::string run_problem(const ChunkRun& run, std::span<const std::int64_t> shape, int world_size);

/// Whether `runs` (well formed) cover `shape` as one run from its first row to its last
/// spanning every other dim: the common case, whose tiling needs no further check.
bool covers_in_one_run(std::span<const ChunkRun> runs, std::span<const std::int64_t> shape);

/// A run as varints (its rest: one offset and size per other dim).
void write_run(detail::ByteWriter& out, const ChunkRun& run);
/// The inverse, for a tensor of `ndim` dims, into `run` (whose vectors keep their
/// memory: decoding millions of runs allocates nothing). Leaves `in.failed` set on
/// bytes that end early.
void read_run(detail::ByteReader& in, std::size_t ndim, ChunkRun& run);

}  // namespace corockpt
