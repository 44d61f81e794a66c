#include "corockpt/ckpt/format/chunk_runs.hpp"

#include <algorithm>
#include <string>

#include "corockpt/ckpt/format/binary_codec.hpp"

namespace corockpt {

namespace {

// ceil(a / b) for a >= 0, b > 0, without overflow.
std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return a / b + (a % b != 0 ? 1 : 0); }

}  // namespace

ChunkRun run_of(const Box& box, std::span<const std::int64_t> shape, int owner) {
  ChunkRun run;
  run.owner = owner;
  if (shape.empty()) return run;
  std::size_t dim = 0;
  while (dim < shape.size() && box.offsets[dim] == 0 && box.sizes[dim] == shape[dim]) ++dim;
  if (dim == shape.size()) dim = 0;
  run.dim = static_cast<std::uint32_t>(dim);
  run.start = box.offsets[dim];
  run.step = box.sizes[dim];
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (d == dim) continue;
    run.rest_offsets.push_back(box.offsets[d]);
    run.rest_sizes.push_back(box.sizes[d]);
  }
  return run;
}

bool extend_run(ChunkRun& run, const ChunkRun& next, std::span<const std::int64_t> shape) {
  if (shape.empty() || run.dim != next.dim || run.rest_offsets != next.rest_offsets ||
      run.rest_sizes != next.rest_sizes) {
    return false;
  }
  return continue_run(run, next, shape[run.dim]);
}

bool continue_run(ChunkRun& run, const ChunkRun& next, std::int64_t extent) {
  // Every cell of `run` must be whole (only a tensor's last cell is cut short): its end
  // start + count * step lies inside the extent.
  if (run.step < 1 || run.count > (extent - run.start) / run.step) return false;
  if (next.start != run.start + run.count * run.step) return false;
  const bool same_step = next.step == run.step;
  const bool short_last = next.count == 1 && next.step < run.step && next.start + next.step == extent;
  if (!same_step && !short_last) return false;
  const std::int32_t owner_step = run.count == 1 ? next.owner - run.owner : run.owner_step;
  if (next.count > 1 && next.owner_step != owner_step) return false;
  if (std::int64_t{next.owner} != run.owner + run.count * std::int64_t{owner_step}) return false;
  run.owner_step = owner_step;
  run.count += next.count;
  return true;
}

Box cell_box(const ChunkRun& run, std::int64_t j, std::span<const std::int64_t> shape) {
  Box box;
  if (shape.empty()) return box;
  const std::int64_t begin = run.start + j * run.step;
  const std::int64_t extent = shape[run.dim];
  const std::int64_t end = extent - begin <= run.step ? extent : begin + run.step;
  std::size_t rest = 0;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (d == run.dim) {
      box.offsets.push_back(begin);
      box.sizes.push_back(end - begin);
    } else {
      box.offsets.push_back(run.rest_offsets[rest]);
      box.sizes.push_back(run.rest_sizes[rest]);
      ++rest;
    }
  }
  return box;
}

std::pair<std::int64_t, std::int64_t> cells_along(const ChunkRun& run, const Box& box) {
  if (box.offsets.empty()) return {0, run.count};
  // The other dims are the same for every cell: they meet the box's, or no cell does.
  for (std::size_t d = 0, rest = 0; d < box.offsets.size(); ++d) {
    if (d == run.dim) continue;
    if (rest >= run.rest_offsets.size()) return {0, 0};
    const std::int64_t lo = std::max(run.rest_offsets[rest], box.offsets[d]);
    const std::int64_t hi = std::min(run.rest_offsets[rest] + run.rest_sizes[rest], box.offsets[d] + box.sizes[d]);
    if (hi <= lo) return {0, 0};
    ++rest;
  }
  const std::int64_t lo = box.offsets[run.dim];
  const std::int64_t hi = lo + box.sizes[run.dim];
  if (box.sizes[run.dim] <= 0 || hi <= run.start) return {0, 0};
  const std::int64_t first = lo <= run.start ? 0 : (lo - run.start) / run.step;
  const std::int64_t last = std::min(run.count, ceil_div(hi - run.start, run.step));
  return {std::min(first, last), last};
}

std::string run_problem(const ChunkRun& run, std::span<const std::int64_t> shape, int world_size) {
  if (shape.empty()) {
    const bool one = run.dim == 0 && run.start == 0 && run.step == 1 && run.count == 1 && run.rest_offsets.empty() &&
                     run.rest_sizes.empty();
    if (!one) return "a 0-d tensor's chunk must be one cell";
  } else {
    if (run.dim >= shape.size()) return "steps along dim " + std::to_string(run.dim) + " of a " + std::to_string(shape.size()) + "-d tensor";
    if (run.rest_offsets.size() != shape.size() - 1 || run.rest_sizes.size() != shape.size() - 1) {
      return "does not give every other dim";
    }
    const std::int64_t extent = shape[run.dim];
    // Cells are non-empty and start inside: start + (count - 1) * step < extent, without overflow.
    if (run.step < 1 || run.step > extent || run.count < 1 || run.start < 0 || run.start >= extent ||
        (run.count - 1) > (extent - 1 - run.start) / run.step) {
      return "its cells leave dim " + std::to_string(run.dim) + " of extent " + std::to_string(extent);
    }
    std::size_t rest = 0;
    for (std::size_t d = 0; d < shape.size(); ++d) {
      if (d == run.dim) continue;
      const std::int64_t offset = run.rest_offsets[rest], size = run.rest_sizes[rest];
      ++rest;
      if (offset < 0 || size < 1 || size > shape[d] || offset > shape[d] - size) {
        return "its cells leave dim " + std::to_string(d) + " of extent " + std::to_string(shape[d]);
      }
    }
  }
  const std::int64_t last_owner = run.owner + (run.count - 1) * std::int64_t{run.owner_step};
  if (run.owner < 0 || run.owner >= world_size || last_owner < 0 || last_owner >= world_size) {
    return "names a writer outside the " + std::to_string(world_size) + " ranks";
  }
  return {};
}

bool covers_in_one_run(std::span<const ChunkRun> runs, std::span<const std::int64_t> shape) {
  if (runs.size() != 1) return false;
  const ChunkRun& run = runs[0];
  if (shape.empty()) return true;
  if (run.start != 0 || run.count < ceil_div(shape[run.dim], run.step)) return false;
  std::size_t rest = 0;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (d == run.dim) continue;
    if (run.rest_offsets[rest] != 0 || run.rest_sizes[rest] != shape[d]) return false;
    ++rest;
  }
  return true;
}

void write_run(detail::ByteWriter& out, const ChunkRun& run) {
  out.varint(run.dim);
  out.varint(static_cast<std::uint64_t>(run.start));
  out.varint(static_cast<std::uint64_t>(run.step));
  out.varint(static_cast<std::uint64_t>(run.count));
  out.varint(static_cast<std::uint32_t>(run.owner));
  out.svarint(run.owner_step);
  for (std::size_t d = 0; d < run.rest_offsets.size(); ++d) {
    out.varint(static_cast<std::uint64_t>(run.rest_offsets[d]));
    out.varint(static_cast<std::uint64_t>(run.rest_sizes[d]));
  }
}

void read_run(detail::ByteReader& in, std::size_t ndim, ChunkRun& run) {
  // Values past int64 (or int32) come out negative, and run_problem refuses them.
  run.dim = static_cast<std::uint32_t>(std::min<std::uint64_t>(in.varint(), 0xffffffffu));
  run.start = static_cast<std::int64_t>(in.varint());
  run.step = static_cast<std::int64_t>(in.varint());
  run.count = static_cast<std::int64_t>(in.varint());
  run.owner = static_cast<std::int32_t>(in.varint());
  run.owner_step = static_cast<std::int32_t>(in.svarint());
  const std::size_t rest = ndim == 0 ? 0 : ndim - 1;
  run.rest_offsets.resize(rest);
  run.rest_sizes.resize(rest);
  for (std::size_t d = 0; d < rest; ++d) {
    run.rest_offsets[d] = static_cast<std::int64_t>(in.varint());
    run.rest_sizes[d] = static_cast<std::int64_t>(in.varint());
  }
}

}  // namespace corockpt
