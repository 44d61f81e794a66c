// check_tiling (declared in checkpoint_metadata.hpp): whether a tensor's chunks cover
// its shape exactly once.

#include <algorithm>
#include <optional>
#include <utility>

#include "corockpt/ckpt/format/checked_size.hpp"
#include "corockpt/ckpt/format/checkpoint_metadata.hpp"
#include "corockpt/ckpt/format/strict_json.hpp"

namespace corockpt {

namespace {

bool lies_within(const Box& box, const std::vector<std::int64_t>& shape) {
  if (box.offsets.size() != shape.size() || box.sizes.size() != shape.size()) return false;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    // offset + size <= extent, written so that nothing overflows.
    if (box.offsets[d] < 0 || box.sizes[d] < 0 || box.sizes[d] > shape[d] || box.offsets[d] > shape[d] - box.sizes[d]) {
      return false;
    }
  }
  return true;
}

// Non-empty boxes overlap when their ranges meet in every dim (two 0-d boxes always do).
bool overlap(const Box& a, const Box& b) {
  for (std::size_t d = 0; d < a.sizes.size(); ++d) {
    if (std::max(a.offsets[d], b.offsets[d]) >= std::min(a.offsets[d] + a.sizes[d], b.offsets[d] + b.sizes[d])) {
      return false;
    }
  }
  return true;
}

// The dim along which the boxes are cut most finely (most distinct offsets): sweeping
// along it, each box meets few others there (with Shard(1), all boxes start at 0 in dim
// 0 and sweeping dim 0 would compare every pair).
std::size_t sweep_dim(const std::vector<const Box*>& boxes, std::size_t ndim) {
  std::size_t best = 0;
  std::size_t best_distinct = 0;
  std::vector<std::int64_t> offsets(boxes.size());
  for (std::size_t d = 0; d < ndim; ++d) {
    std::transform(boxes.begin(), boxes.end(), offsets.begin(), [d](const Box* b) { return b->offsets[d]; });
    std::sort(offsets.begin(), offsets.end());
    const auto distinct = static_cast<std::size_t>(std::unique(offsets.begin(), offsets.end()) - offsets.begin());
    if (distinct > best_distinct) {
      best = d;
      best_distinct = distinct;
    }
  }
  return best;
}

// Some pair of overlapping boxes, if any. Sorted by their start along the sweep dim, a
// box can only overlap the boxes after it that start before it ends there, so each is
// compared with those alone: O(n log n) plus the pairs that meet along that dim.
std::optional<std::pair<const Box*, const Box*>> find_overlap(std::vector<const Box*> boxes, std::size_t ndim) {
  if (boxes.size() < 2) return std::nullopt;
  if (ndim == 0) return std::pair{boxes[0], boxes[1]};
  const std::size_t d = sweep_dim(boxes, ndim);
  std::sort(boxes.begin(), boxes.end(), [d](const Box* a, const Box* b) {
    if (a->offsets[d] != b->offsets[d]) return a->offsets[d] < b->offsets[d];
    return a->offsets < b->offsets;
  });
  for (std::size_t i = 0; i < boxes.size(); ++i) {
    const std::int64_t end = boxes[i]->offsets[d] + boxes[i]->sizes[d];
    for (std::size_t j = i + 1; j < boxes.size() && boxes[j]->offsets[d] < end; ++j) {
      if (overlap(*boxes[i], *boxes[j])) return std::pair{boxes[i], boxes[j]};
    }
  }
  return std::nullopt;
}

}  // namespace

Result<void> check_tiling(const std::string& name, const TensorRecord& record) {
  const std::string where = "tensor " + detail::quoted_text(name) + ": ";
  auto corrupt = [&](const std::string& what) {
    return fail(Error{Errc::corrupt, where + what, {}, 0}.with_fqn(name));
  };
  const auto total = detail::checked_numel(record.shape);
  if (!total) return corrupt("shape " + detail::list_text(record.shape) + " is not a valid shape");

  std::vector<const Box*> filled;  // empty chunks cover nothing and overlap nothing
  filled.reserve(record.chunks.size());
  for (const auto& chunk : record.chunks) {
    if (!lies_within(chunk.box, record.shape)) {
      return corrupt("chunk box " + chunk.box.to_string() + " does not lie within shape " +
                     detail::list_text(record.shape));
    }
    // Inside a shape whose element count fits, a box's count cannot overflow.
    if (!chunk.box.empty()) filled.push_back(&chunk.box);
  }

  if (auto pair = find_overlap(filled, record.shape.size())) {
    return corrupt("chunks " + pair->first->to_string() + " and " + pair->second->to_string() + " overlap");
  }
  // Disjoint boxes inside the shape: they tile it exactly when their sizes add up.
  std::int64_t covered = 0;
  for (const Box* box : filled) covered += box->numel();
  if (covered != *total) {
    return corrupt("chunks cover " + std::to_string(covered) + " of " + std::to_string(*total) + " elements (" +
                   std::to_string(*total - covered) + " not covered)");
  }
  return {};
}

}  // namespace corockpt
