#include "corockpt/ckpt/detail/read_plan.hpp"

#include <algorithm>
#include <limits>
#include <map>
#include <numeric>
#include <string_view>
#include <tuple>

#include "corockpt/ckpt/box.hpp"
#include "corockpt/ckpt/detail/shard_rows.hpp"
#include "corockpt/ckpt/dtype.hpp"

namespace corockpt::detail {

namespace {

// Where ranges may start and end: a whole number of checksum blocks and of elements.
std::uint64_t granule_of(std::uint64_t block, std::uint64_t elem) {
  const std::uint64_t blocks_per_granule = elem / std::gcd(block, elem);
  if (block > std::numeric_limits<std::uint64_t>::max() / blocks_per_granule) {
    return std::numeric_limits<std::uint64_t>::max();  // no chunk is that long: one range a chunk
  }
  return block * blocks_per_granule;
}

// Bytes of `saved` that hold the elements `overlap` takes: from the first to the last
// element in the chunk's row-major order.
std::pair<std::uint64_t, std::uint64_t> hull_bytes(const Box& saved, const Box& overlap, std::uint64_t elem) {
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  std::uint64_t stride = 1;
  for (std::size_t d = saved.sizes.size(); d-- > 0;) {
    first += static_cast<std::uint64_t>(overlap.offsets[d] - saved.offsets[d]) * stride;
    last += static_cast<std::uint64_t>(overlap.offsets[d] + overlap.sizes[d] - 1 - saved.offsets[d]) * stride;
    stride *= static_cast<std::uint64_t>(saved.sizes[d]);
  }
  return {first * elem, (last + 1) * elem};
}

// [from, to) widened to granules, within a chunk of `length` bytes.
std::pair<std::uint64_t, std::uint64_t> widen(std::uint64_t from, std::uint64_t to, std::uint64_t granule,
                                              std::uint64_t length) {
  from -= from % granule;
  const std::uint64_t floor_to = to - to % granule;
  if (to % granule != 0) to = length - floor_to <= granule ? length : floor_to + granule;
  return {from, std::min(to, length)};
}

struct Range {
  ReadSegment segment;
  std::uint64_t granule = 0;
  std::uint64_t file_begin() const { return segment.saved->begin + segment.from; }
};

// Each chunk's needed ranges, merged where they overlap or touch.
std::vector<Range> chunk_ranges(std::span<const ReadNeed> needs, std::uint64_t block) {
  std::vector<Range> ranges;
  ranges.reserve(needs.size());
  for (const ReadNeed& need : needs) {
    const Box overlap = intersect(need.target->box, need.saved->box);
    if (overlap.empty()) continue;
    const std::uint64_t elem = size_of(need.record->dtype);
    const std::uint64_t granule = granule_of(block, elem);
    const auto [first, last] = hull_bytes(need.saved->box, overlap, elem);
    const auto [from, to] = widen(first, last, granule, need.saved->end - need.saved->begin);
    ranges.push_back({{need.name, need.record, need.saved, from, to, {need.target}}, granule});
  }
  // Grouped by chunk (thousands of them: a sort, not a map of vectors), in offset order.
  std::ranges::sort(ranges, [](const Range& a, const Range& b) {
    return std::tie(a.segment.saved, a.segment.from) < std::tie(b.segment.saved, b.segment.from);
  });
  std::vector<Range> merged;
  for (Range& range : ranges) {
    if (!merged.empty() && merged.back().segment.saved == range.segment.saved &&
        range.segment.from <= merged.back().segment.to) {
      ReadSegment& last = merged.back().segment;
      last.to = std::max(last.to, range.segment.to);
      for (LocalChunk* target : range.segment.targets) {
        if (std::ranges::find(last.targets, target) == last.targets.end()) last.targets.push_back(target);
      }
    } else {
      merged.push_back(std::move(range));
    }
  }
  return merged;
}

// Packs one file's ranges (sorted by offset) into reads.
void pack_file(std::vector<Range>& ranges, const ReadPlanLimits& limits, std::vector<PlannedRead>& reads) {
  std::ranges::sort(ranges, {}, [](const Range& r) { return r.file_begin(); });
  PlannedRead current{};
  auto close = [&] {
    if (!current.segments.empty()) reads.push_back(std::move(current));
    current = PlannedRead{};
  };
  for (Range& range : ranges) {
    ReadSegment& segment = range.segment;
    std::uint64_t at = segment.from;
    while (at < segment.to) {
      const std::uint64_t file_at = segment.saved->begin + at;
      if (!current.segments.empty() && (file_at < current.end || file_at - current.end > limits.max_gap ||
                                        file_at - current.begin >= limits.max_read)) {
        close();
      }
      const bool fresh = current.segments.empty();
      const std::uint64_t room = fresh ? limits.max_read : current.begin + limits.max_read - file_at;
      const std::uint64_t rest = segment.to - at;
      std::uint64_t take = rest <= room ? rest : room - room % range.granule;
      if (take == 0 && !fresh) {
        close();
        continue;
      }
      if (take == 0) {  // a granule longer than a read: a read of its own
        take = std::min(rest, range.granule);
        current.oversized = true;
      }
      if (fresh) {
        current.file = &segment.saved->file;
        current.begin = file_at;
      }
      // The whole segment in one read (the common case) moves; a piece copies its targets.
      const bool whole = at == segment.from && take == rest;
      ReadSegment piece = whole ? std::move(segment) : segment;
      piece.from = at;
      piece.to = at + take;
      current.segments.push_back(std::move(piece));
      current.end = file_at + take;
      at += take;
      if (at < segment.to || current.end - current.begin >= limits.max_read) close();
    }
  }
  close();
}

}  // namespace

Result<LoadNeeds> find_read_needs(const CheckpointMetadata& metadata, std::span<LocalChunk> targets, bool strict,
                                  const std::string& dir) {
  LoadNeeds out;
  std::set<std::string> checked;  // tensors whose tiling is known good
  std::string_view last_file;
  for (auto& target : targets) {
    auto it = metadata.tensors.find(target.name);
    if (it == metadata.tensors.end()) {
      if (strict) {
        return fail(Errc::not_found, "the checkpoint has no " + target.name,
                    {.fqn = target.name, .path = dir, .operation = "load"});
      }
      if (out.missing.empty() || out.missing.back() != target.name) out.missing.push_back(target.name);
      continue;
    }
    const TensorRecord& record = it->second;
    if (record.shape != target.shape) {
      if (strict) {
        return fail(Errc::invalid_argument,
                    target.name + " has shape " + shape_text(record.shape) + " in the checkpoint but " +
                        shape_text(target.shape) + " in the model",
                    {.fqn = target.name, .path = dir, .operation = "load"});
      }
      if (out.mismatched.empty() || out.mismatched.back() != target.name) out.mismatched.push_back(target.name);
      continue;
    }
    // A gap would leave model values silently stale: the chunks must tile the tensor.
    if (!metadata.partial && checked.insert(target.name).second) {  // a partial read checked it
      if (auto ok = check_tiling(target.name, record); !ok) return fail(ok.error().with_path(dir));
    }
    for (const auto& saved : record.chunks) {
      if (!overlaps(target.box, saved.box)) continue;
      out.needs.push_back({&it->first, &record, &saved, &target});
      if (saved.file != last_file) out.files.insert(saved.file);  // most needs share their file with the last
      last_file = saved.file;
    }
    out.elements += target.box.numel();
  }
  return out;
}

std::vector<PlannedRead> plan_reads(std::span<const ReadNeed> needs, const ReadPlanLimits& limits) {
  std::map<std::string_view, std::vector<Range>> by_file;
  for (Range& range : chunk_ranges(needs, limits.block_size))
    by_file[range.segment.saved->file].push_back(std::move(range));
  std::vector<std::vector<PlannedRead>> per_file;
  for (auto& [file, ranges] : by_file) pack_file(ranges, limits, per_file.emplace_back());
  // Round robin over the files, each left out once it has no more reads: a load can
  // read from hundreds of files, a few of them with thousands of reads.
  std::vector<PlannedRead> reads;
  std::vector<std::size_t> active(per_file.size());
  std::iota(active.begin(), active.end(), std::size_t{0});
  for (std::size_t i = 0; !active.empty(); ++i) {
    std::size_t kept = 0;
    for (std::size_t file : active) {
      if (i >= per_file[file].size()) continue;
      reads.push_back(std::move(per_file[file][i]));
      active[kept++] = file;
    }
    active.resize(kept);
  }
  return reads;
}

}  // namespace corockpt::detail
