#include "corockpt/ckpt/box.hpp"

#include <algorithm>
#include <cstring>

#include "corockpt/ckpt/detail/copy_past_cache.hpp"
#include "corockpt/ckpt/detail/expects.hpp"

namespace corockpt {

namespace {

std::string list_string(const std::vector<std::int64_t>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(v[i]);
  }
  return out + "]";
}

// Row-major strides, in elements, of a contiguous block of `sizes`.
std::vector<std::int64_t> strides_of(const std::vector<std::int64_t>& sizes) {
  std::vector<std::int64_t> strides(sizes.size(), 1);
  for (std::size_t d = sizes.size(); d-- > 1;) strides[d - 1] = strides[d] * sizes[d];
  return strides;
}

// Splits [begin, end) of the block spanned by dims d.. into boxes; `prefix` holds the
// fixed coordinates of dims < d. A range is a head (partial first row), whole rows,
// and a tail (partial last row); head and tail recurse one dim down.
void decompose(const std::vector<std::int64_t>& shape, const std::vector<std::int64_t>& strides,
               std::size_t d, std::int64_t begin, std::int64_t end,
               std::vector<std::int64_t>& prefix, std::vector<Box>& out) {
  if (begin >= end) return;
  auto emit = [&](std::int64_t first, std::int64_t rows) {  // whole inner dims
    Box box;
    box.offsets = prefix;
    box.sizes.assign(prefix.size(), 1);
    box.offsets.push_back(first);
    box.sizes.push_back(rows);
    for (std::size_t k = d + 1; k < shape.size(); ++k) {
      box.offsets.push_back(0);
      box.sizes.push_back(shape[k]);
    }
    out.push_back(std::move(box));
  };
  const std::int64_t row = strides[d];  // elements per index of dim d
  if (d + 1 == shape.size() || (begin % row == 0 && end % row == 0)) {
    emit(begin / row, (end - begin) / row);  // whole rows (row == 1 in the last dim)
    return;
  }
  const std::int64_t first_row = begin / row;
  const std::int64_t last_row = end / row;  // the row holding the tail, if any
  auto recurse = [&](std::int64_t index, std::int64_t b, std::int64_t e) {
    prefix.push_back(index);
    decompose(shape, strides, d + 1, b, e, prefix, out);
    prefix.pop_back();
  };
  if (first_row == last_row) {  // inside one row
    recurse(first_row, begin - first_row * row, end - first_row * row);
    return;
  }
  std::int64_t whole_from = first_row;
  if (begin % row != 0) {
    recurse(first_row, begin % row, row);
    whole_from = first_row + 1;
  }
  if (last_row > whole_from) emit(whole_from, last_row - whole_from);
  if (end % row != 0) recurse(last_row, 0, end % row);
}

}  // namespace

std::int64_t Box::numel() const {
  std::int64_t n = 1;
  for (std::int64_t s : sizes) n *= s;
  return n;
}

std::string Box::to_string() const {
  return "[offsets=" + list_string(offsets) + ", sizes=" + list_string(sizes) + "]";
}

Box whole_box(const std::vector<std::int64_t>& shape) {
  return Box{std::vector<std::int64_t>(shape.size(), 0), shape};
}

Range shard_range(std::int64_t n, std::int64_t parts, std::int64_t k) {
  detail::expects(n >= 0 && parts >= 1 && k >= 0 && k < parts, "shard_range: n >= 0, 0 <= k < parts");
  const std::int64_t chunk = (n + parts - 1) / parts;
  const std::int64_t start = k * chunk;
  return Range{std::min(start, n), std::max<std::int64_t>(0, std::min(n, start + chunk) - start)};
}

Result<Box> local_box(const std::vector<std::int64_t>& global_shape, const DeviceMesh& mesh,
                      const std::vector<Placement>& placements, int rank) {
  if (static_cast<int>(placements.size()) != mesh.ndim()) {
    return fail(Errc::invalid_argument,
                std::to_string(placements.size()) + " placements for a " +
                    std::to_string(mesh.ndim()) + "-d mesh " + mesh.to_string() + " (one per mesh dim)");
  }
  for (std::int64_t s : global_shape) {
    if (s < 0) return fail(Errc::invalid_argument, "negative size in shape " + list_string(global_shape));
  }
  for (const auto& p : placements) {
    if (p.is_shard() && (p.dim < 0 || p.dim >= static_cast<int>(global_shape.size()))) {
      return fail(Errc::invalid_argument, p.to_string() + " on a tensor of shape " +
                                              list_string(global_shape) + " (it has no dim " +
                                              std::to_string(p.dim) + ")");
    }
  }
  auto coord = mesh.coordinate(rank);
  if (!coord) return fail(coord.error());

  Box box = whole_box(global_shape);
  for (std::size_t i = 0; i < placements.size(); ++i) {
    if (!placements[i].is_shard()) continue;
    const auto d = static_cast<std::size_t>(placements[i].dim);
    const Range part = shard_range(box.sizes[d], mesh.shape()[i], (*coord)[i]);
    box.sizes[d] = part.length;
    box.offsets[d] = part.length == 0 ? global_shape[d] : box.offsets[d] + part.offset;
  }
  return box;
}

bool overlaps(const Box& a, const Box& b) {
  const std::size_t n = a.sizes.size();
  if (b.sizes.size() != n) return false;
  for (std::size_t d = 0; d < n; ++d) {
    const std::int64_t lo = std::max(a.offsets[d], b.offsets[d]);
    const std::int64_t hi = std::min(a.offsets[d] + a.sizes[d], b.offsets[d] + b.sizes[d]);
    if (hi <= lo) return false;
  }
  return true;
}

Box intersect(const Box& a, const Box& b) {
  Box out;
  const std::size_t n = a.sizes.size();
  if (b.sizes.size() != n) {  // not comparable: nothing in common
    out.offsets = a.offsets;
    out.sizes.assign(n, 0);
    return out;
  }
  out.offsets.resize(n);
  out.sizes.resize(n);
  for (std::size_t d = 0; d < n; ++d) {
    const std::int64_t lo = std::max(a.offsets[d], b.offsets[d]);
    const std::int64_t hi = std::min(a.offsets[d] + a.sizes[d], b.offsets[d] + b.sizes[d]);
    out.offsets[d] = lo;
    out.sizes[d] = std::max<std::int64_t>(0, hi - lo);
  }
  return out;
}

namespace {

// Calls run(src_element, dst_element, elements) for each contiguous run of the elements
// where `src_box` and `dst_box` overlap: the innermost dim, widened over outer dims while
// the inner ones are whole in both boxes (then consecutive rows are adjacent in both).
template <typename Run>
void for_each_overlap_run(const Box& src_box, const Box& dst_box, Run run_at) {
  detail::expects(src_box.sizes.size() == dst_box.sizes.size(), "copy_overlap: boxes of different ndim");
  const Box common = intersect(src_box, dst_box);
  if (common.empty()) return;
  const std::size_t n = common.sizes.size();
  if (n == 0) {  // two scalars
    run_at(0, 0, 1);
    return;
  }
  std::size_t run_dim = n - 1;
  std::int64_t run = common.sizes[run_dim];
  while (run_dim > 0 && common.sizes[run_dim] == src_box.sizes[run_dim] &&
         common.sizes[run_dim] == dst_box.sizes[run_dim]) {
    --run_dim;
    run *= common.sizes[run_dim];
  }
  const auto src_strides = strides_of(src_box.sizes);
  const auto dst_strides = strides_of(dst_box.sizes);
  std::int64_t src_at = 0;
  std::int64_t dst_at = 0;
  for (std::size_t d = 0; d < n; ++d) {
    src_at += (common.offsets[d] - src_box.offsets[d]) * src_strides[d];
    dst_at += (common.offsets[d] - dst_box.offsets[d]) * dst_strides[d];
  }
  // An odometer over the dims outside the run.
  std::vector<std::int64_t> index(run_dim, 0);
  while (true) {
    run_at(src_at, dst_at, run);
    std::size_t d = run_dim;
    while (d > 0) {
      --d;
      if (++index[d] < common.sizes[d]) {
        src_at += src_strides[d];
        dst_at += dst_strides[d];
        break;
      }
      src_at -= (common.sizes[d] - 1) * src_strides[d];
      dst_at -= (common.sizes[d] - 1) * dst_strides[d];
      index[d] = 0;
      if (d == 0) return;
    }
    if (run_dim == 0) return;
  }
}

void expect_holds(std::span<const std::byte> bytes, const Box& box, std::size_t elem_size, const char* what) {
  detail::expects(bytes.size() / elem_size >= static_cast<std::size_t>(box.numel()), what);
}

// Copies each overlapping run with copy(to, from, bytes).
template <typename Copy>
void copy_runs(const Box& src_box, std::span<const std::byte> src, const Box& dst_box, std::span<std::byte> dst,
               std::size_t elem_size, Copy copy) {
  expect_holds(src, src_box, elem_size, "copy_overlap: source smaller than its box");
  expect_holds(dst, dst_box, elem_size, "copy_overlap: destination smaller than its box");
  for_each_overlap_run(src_box, dst_box, [&](std::int64_t src_at, std::int64_t dst_at, std::int64_t run) {
    copy(dst.data() + static_cast<std::size_t>(dst_at) * elem_size,
         src.data() + static_cast<std::size_t>(src_at) * elem_size, static_cast<std::size_t>(run) * elem_size);
  });
}

}  // namespace

void copy_overlap(const Box& src_box, std::span<const std::byte> src, const Box& dst_box,
                  std::span<std::byte> dst, std::size_t elem_size) {
  copy_runs(src_box, src, dst_box, dst, elem_size,
            [](std::byte* to, const std::byte* from, std::size_t bytes) { std::memcpy(to, from, bytes); });
}

void convert_overlap(const Box& src_box, std::span<const std::byte> src, DType from, const Box& dst_box,
                     std::span<std::byte> dst, DType to) {
  if (from == to) return copy_runs(src_box, src, dst_box, dst, size_of(from), detail::copy_past_cache);
  const std::size_t src_elem = size_of(from);
  const std::size_t dst_elem = size_of(to);
  expect_holds(src, src_box, src_elem, "convert_overlap: source smaller than its box");
  expect_holds(dst, dst_box, dst_elem, "convert_overlap: destination smaller than its box");
  for_each_overlap_run(src_box, dst_box, [&](std::int64_t src_at, std::int64_t dst_at, std::int64_t run) {
    const auto count = static_cast<std::size_t>(run);
    convert(src.subspan(static_cast<std::size_t>(src_at) * src_elem, count * src_elem), from,
            dst.subspan(static_cast<std::size_t>(dst_at) * dst_elem, count * dst_elem), to, count);
  });
}

std::vector<Box> flat_range_boxes(const std::vector<std::int64_t>& shape, std::int64_t begin,
                                  std::int64_t end) {
  const std::int64_t total = whole_box(shape).numel();
  detail::expects(0 <= begin && begin <= end && end <= total, "flat_range_boxes: 0 <= begin <= end <= numel");
  std::vector<Box> out;
  if (begin == end) return out;
  if (shape.empty()) {  // a scalar: its one element
    out.push_back(Box{});
    return out;
  }
  std::vector<std::int64_t> prefix;
  decompose(shape, strides_of(shape), 0, begin, end, prefix, out);
  return out;
}

}  // namespace corockpt
