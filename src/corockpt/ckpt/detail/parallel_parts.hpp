#pragma once
/// @file
/// CPU work split into parts run at once on threads of their own: the coordinator's merge
/// of thousands of plans, a load rank's decoding of thousands of tensors. Each part is
/// synchronous code that returns before the caller goes on, so parts may use the caller's
/// locals (no coroutine suspends meanwhile), and must not throw.

#include <algorithm>
#include <cstddef>
#include <thread>
#include <vector>

namespace corockpt::detail {

/// How many parts `items` make: one per `items_per_part` (at least one), at most one per
/// core.
inline std::size_t parts_for(std::size_t items, std::size_t items_per_part) {
  const std::size_t cores = std::max(1u, std::thread::hardware_concurrency());
  return std::clamp<std::size_t>(items / std::max<std::size_t>(items_per_part, 1), 1, cores);
}

/// Runs part(0) .. part(parts - 1) at once, part(0) on the caller's thread; returns when
/// every one has.
template <class Part>
void run_parts(std::size_t parts, const Part& part) {
  std::vector<std::jthread> others;
  for (std::size_t k = 1; k < parts; ++k) others.emplace_back([&part, k] { part(k); });
  part(0);
}

}  // namespace corockpt::detail
