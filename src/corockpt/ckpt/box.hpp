#pragma once
/// @file
/// `Box`: an axis-aligned block of a tensor (offsets + sizes per dim), the unit in which
/// shards are described, saved, loaded and redistributed; DTensor's `Shard` chunk rule;
/// a rank's box under a mesh and placements; and copying the overlap of two boxes.
///
/// The chunk rule (PyTorch DTensor's, see DESIGN.md): a dim of length n split into
/// `parts` has chunk = ceil(n / parts); part k starts at min(k*chunk, n) and has
/// max(0, min(n, (k+1)*chunk) - k*chunk) rows, so trailing parts may be empty, at offset n.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "corockpt/ckpt/device_mesh.hpp"
#include "corockpt/ckpt/dtype.hpp"
#include "corockpt/ckpt/placement.hpp"
#include "corockpt/runtime/error.hpp"

namespace corockpt {

struct Box {
  std::vector<std::int64_t> offsets;
  std::vector<std::int64_t> sizes;

  int ndim() const { return static_cast<int>(sizes.size()); }
  /// Elements in the box: the product of sizes (1 for a 0-d box, a scalar).
  std::int64_t numel() const;
  bool empty() const { return numel() == 0; }
  /// "[offsets=[0, 4], sizes=[2, 4]]".
  std::string to_string() const;

  friend bool operator==(const Box&, const Box&) = default;
};

/// The box of a whole tensor: offsets 0, sizes = shape.
Box whole_box(const std::vector<std::int64_t>& shape);

struct Range {
  std::int64_t offset = 0;
  std::int64_t length = 0;
  friend bool operator==(const Range&, const Range&) = default;
};

/// Part k of a dim of length n split into `parts` by the chunk rule above.
/// Preconditions (checked): n >= 0, parts >= 1, 0 <= k < parts.
Range shard_range(std::int64_t n, std::int64_t parts, std::int64_t k);

/// The box `rank` holds of a tensor of `global_shape` placed on `mesh` with `placements`
/// (one per mesh dim). Mesh dims apply in order: Shard(d) on mesh dim i splits the
/// current extent of tensor dim d by the rank's coordinate on dim i, so two shards of
/// the same tensor dim nest (the second splits the first's part). An empty extent lies
/// at offset global_shape[d], as PyTorch standardises it. Replicate() changes nothing.
/// @returns Errc::invalid_argument when placements.size() != mesh.ndim(), a Shard's dim
/// is not a dim of the tensor or a size is negative; Errc::not_found when `rank` is
/// not in the mesh.
Result<Box> local_box(const std::vector<std::int64_t>& global_shape, const DeviceMesh& mesh,
                      const std::vector<Placement>& placements, int rank);

/// The common part of two boxes of the same ndim (sizes 0 where they do not meet).
Box intersect(const Box& a, const Box& b);
/// Whether intersect(a, b) holds an element, without building it.
bool overlaps(const Box& a, const Box& b);

/// Copies the elements where `src_box` and `dst_box` overlap, from `src` (the contiguous
/// row-major contents of src_box) to `dst` (those of dst_box); other elements of `dst`
/// are untouched. Contiguous runs are copied with one memcpy each.
/// Preconditions (checked): same ndim; src and dst hold at least numel * elem_size bytes.
void copy_overlap(const Box& src_box, std::span<const std::byte> src, const Box& dst_box,
                  std::span<std::byte> dst, std::size_t elem_size);

/// The same from `src` of dtype `from` into `dst` of dtype `to`, each element converted
/// as `convert` does. Of one dtype, runs are copied with detail::copy_past_cache: for
/// destinations not read again soon (a load's targets), bulk runs bypass the cache.
void convert_overlap(const Box& src_box, std::span<const std::byte> src, DType from, const Box& dst_box,
                     std::span<std::byte> dst, DType to);

/// Elements [begin, end) of a row-major tensor of `shape` (a slice of a flattened
/// tensor, as an FSDP1 flat shard holds) as boxes in row-major order: at most
/// 2 * ndim - 1 of them, none empty. Preconditions (checked): 0 <= begin <= end <= numel.
std::vector<Box> flat_range_boxes(const std::vector<std::int64_t>& shape, std::int64_t begin,
                                  std::int64_t end);

}  // namespace corockpt
