#pragma once
/// @file
/// Element and byte counts of shapes read from files, where every size is untrusted:
/// nothing here can overflow, an impossible shape is simply "no answer".

#include <cstdint>
#include <limits>
#include <optional>
#include <span>

#include "corockpt/ckpt/dtype.hpp"

namespace corockpt::detail {

/// The elements of a tensor of `shape` (1 for a 0-d shape), or nullopt when a size is
/// negative or the count does not fit int64. Empty dims count as 1 for that bound, so a
/// shape like [0, 2^40, 2^40] is refused too: the strides of its other dims would not fit.
inline std::optional<std::int64_t> checked_numel(std::span<const std::int64_t> shape) {
  std::int64_t bound = 1;
  bool empty = false;
  for (std::int64_t size : shape) {
    if (size < 0) return std::nullopt;
    if (size == 0) {
      empty = true;
      continue;
    }
    if (__builtin_mul_overflow(bound, size, &bound)) return std::nullopt;
  }
  return empty ? 0 : bound;
}

/// The bytes of a `dtype` tensor of `shape`, or nullopt where checked_numel has none or
/// the byte count does not fit int64 (so it fits every signed and unsigned size type).
inline std::optional<std::uint64_t> checked_bytes(std::span<const std::int64_t> shape, DType dtype) {
  const auto numel = checked_numel(shape);
  if (!numel) return std::nullopt;
  std::int64_t bytes = 0;
  if (__builtin_mul_overflow(*numel, static_cast<std::int64_t>(size_of(dtype)), &bytes)) return std::nullopt;
  return static_cast<std::uint64_t>(bytes);
}

}  // namespace corockpt::detail
