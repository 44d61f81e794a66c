#pragma once
/// @file
/// Which bytes of a checkpoint's data files a load reads, and in which reads: the plan
/// behind loads at the disk's speed.
///
/// Each saved chunk a target overlaps is read over the hull of the elements the target
/// needs, widened to whole checksum blocks (every byte read is verified) and whole
/// elements; hulls of one chunk merge. In each file the ranges are sorted and packed into
/// reads of at most `max_read` bytes, neighbours merged across chunks (a gap up to
/// `max_gap` is read through rather than costing another request), and cut only where a
/// checksum block and an element both end, so each read verifies and copies on its own.
/// A checksum block larger than `max_read` makes a read of its own, marked `oversized`.

#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "corockpt/ckpt/format/checkpoint_metadata.hpp"
#include "corockpt/ckpt/local_chunks.hpp"

namespace corockpt::detail {

/// A target that needs elements of the saved chunk `saved` of the tensor `name`.
struct ReadNeed {
  const std::string* name;
  const TensorRecord* record;
  const ChunkRecord* saved;
  LocalChunk* target;
};

/// Bytes [from, to) of one saved chunk (offsets from the chunk's first byte: whole
/// checksum blocks and whole elements), and the targets that take elements from them.
struct ReadSegment {
  const std::string* name;
  const TensorRecord* record;
  const ChunkRecord* saved;
  std::uint64_t from = 0;
  std::uint64_t to = 0;
  std::vector<LocalChunk*> targets;
};

/// One read of file bytes [begin, end): its segments, in file order, within it.
struct PlannedRead {
  const std::string* file;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  bool oversized = false;  ///< longer than max_read: one checksum block is
  std::vector<ReadSegment> segments;
};

struct ReadPlanLimits {
  std::uint64_t block_size;  ///< the checkpoint's checksum block
  std::uint64_t max_read;    ///< bytes one read may cover (> 0)
  std::uint64_t max_gap = 128 << 10;
};

/// What a load of `targets` takes from a checkpoint, before any byte is read.
struct LoadNeeds {
  std::vector<ReadNeed> needs;  ///< every (target, saved chunk) pair that overlap
  std::set<std::string> files;  ///< the data files those chunks lie in
  std::vector<std::string> missing;     ///< targets' tensors the checkpoint lacks (not strict)
  std::vector<std::string> mismatched;  ///< ... or holds with another global shape (not strict)
  std::int64_t elements = 0;            ///< elements of the targets that will be filled
};

/// Finds, for each target, the saved chunks of its tensor in `metadata` it overlaps
/// (a scan of the tensor's chunks), after checking once per tensor that its chunks tile
/// it. The pointers in the result point into `metadata` and `targets`.
/// @returns with `strict`, Errc::not_found for a tensor the checkpoint lacks and
///   Errc::invalid_argument for one of another shape; check_tiling's Errc::corrupt; each
///   naming the tensor and `dir`.
Result<LoadNeeds> find_read_needs(const CheckpointMetadata& metadata, std::span<LocalChunk> targets, bool strict,
                                  const std::string& dir);

/// The reads that fill `needs`, files interleaved (read i of each file, then read i + 1)
/// so that reads in flight spread over the files.
std::vector<PlannedRead> plan_reads(std::span<const ReadNeed> needs, const ReadPlanLimits& limits);

}  // namespace corockpt::detail
