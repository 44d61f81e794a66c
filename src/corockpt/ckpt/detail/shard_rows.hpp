#pragma once
/// @file
/// Layout arithmetic the model, the collector and set_state_dict share: byte counts, a
/// param's Shard(0) rows over its group, and shapes as text for error messages.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "corockpt/ckpt/box.hpp"
#include "corockpt/ckpt/dtype.hpp"

namespace corockpt::detail {

inline std::size_t bytes_of(std::int64_t elements, DType dtype) {
  return static_cast<std::size_t>(elements) * size_of(dtype);
}

/// Elements in one row (dim 0 index) of a tensor of `shape`.
inline std::int64_t row_elements(const std::vector<std::int64_t>& shape) {
  std::int64_t inner = 1;
  for (std::size_t d = 1; d < shape.size(); ++d) inner *= shape[d];
  return inner;
}

/// The rows of dim 0 that group rank `k` holds of a param of `shape`, Shard(0) over `n`.
inline Range rows_of(const std::vector<std::int64_t>& shape, std::int64_t n, std::int64_t k) {
  return shard_range(shape.empty() ? 1 : shape[0], n, k);
}

/// Bytes each of `n` group ranks contributes when every non-buffer param among `params`
/// (ParamSlots) sends its Shard(0) rows of `kinds(slot)` tensors: the counts of the
/// all-gather-v that the collector's full per_param path and set_state_dict share.
template <class Slots, class Kinds>
std::vector<std::size_t> row_bytes_per_rank(const Slots& params, int n, Kinds kinds) {
  std::vector<std::size_t> counts(static_cast<std::size_t>(n), 0);
  for (const auto& slot : params) {
    if (slot.spec->buffer) continue;
    const std::int64_t row = row_elements(slot.spec->shape);
    for (int r = 0; r < n; ++r) {
      counts[r] += bytes_of(rows_of(slot.spec->shape, n, r).length * row, slot.spec->dtype) * kinds(slot);
    }
  }
  return counts;
}

/// "[4, 2]".
inline std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

}  // namespace corockpt::detail
