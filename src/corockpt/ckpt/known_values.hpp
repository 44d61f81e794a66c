#pragma once
/// @file
/// Checking a rank's chunks against the known-value formula (Model::known_value): what
/// `corockpt load --check` and the round-trip tests assert after a load.

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "corockpt/ckpt/local_chunks.hpp"

namespace corockpt {

struct KnownValuesCheck {
  std::int64_t checked = 0;  ///< elements compared
  /// The first element that differs: "<name> element <index>: <got> != <expected>".
  std::optional<std::string> first_mismatch;
  bool ok() const { return !first_mismatch; }
};

/// Compares every element of every chunk with known_value(name, global row-major index,
/// dtype), as that value reads in the chunk's dtype. Stops at the first mismatch.
KnownValuesCheck check_known_values(std::span<const LocalChunk> chunks);

}  // namespace corockpt
