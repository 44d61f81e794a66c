#pragma once
/// @file
/// `expects`: a precondition that is always checked. For a caller's bug that would
/// otherwise corrupt memory (a buffer smaller than its box); bad *input* is reported
/// with a Result instead.

#include <cstdio>
#include <cstdlib>

namespace corockpt::detail {

inline void expects(bool holds, const char* what) {
  if (holds) return;
  std::fprintf(stderr, "corockpt: precondition violated: %s\n", what);
  std::abort();
}

}  // namespace corockpt::detail
