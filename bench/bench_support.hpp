#pragma once
// What the benchmarks share: the spread of a figure over the rounds of a run.
#include <algorithm>
#include <vector>

namespace corockpt::bench {

/// Median, minimum and maximum of a figure over rounds.
struct Spread {
  double median = 0, min = 0, max = 0;
};

/// The spread of `values` (all zero when there are none).
inline Spread spread_of(std::vector<double> values) {
  if (values.empty()) return {};
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  const double median = n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
  return {median, values.front(), values.back()};
}

}  // namespace corockpt::bench
