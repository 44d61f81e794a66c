#pragma once
/// @file
/// `Placement`: how a DTensor lies along one mesh dim, as in PyTorch: `Shard(d)` splits
/// tensor dim d across that mesh dim's ranks (DTensor's chunk rule, see box.hpp);
/// `Replicate()` gives every rank along it the whole extent.

#include <string>
#include <string_view>

#include "corockpt/runtime/error.hpp"

namespace corockpt {

struct Placement {
  enum Kind { shard, replicate };
  Kind kind = replicate;
  int dim = 0;  ///< the tensor dim split by a shard; meaningless for replicate

  static Placement Shard(int dim) { return {shard, dim}; }
  static Placement Replicate() { return {replicate, 0}; }

  bool is_shard() const { return kind == shard; }
  bool is_replicate() const { return kind == replicate; }

  /// "Shard(0)" or "Replicate()", as PyTorch prints them.
  std::string to_string() const;

  /// Replicates are equal whatever their `dim`.
  friend bool operator==(const Placement& a, const Placement& b) {
    return a.kind == b.kind && (a.kind == replicate || a.dim == b.dim);
  }
};

/// Parses "Shard(d)" (d >= 0) and "Replicate()", surrounding spaces allowed.
/// @returns Errc::invalid_argument quoting the text otherwise (Partial is not supported).
Result<Placement> parse_placement(std::string_view text);

}  // namespace corockpt
