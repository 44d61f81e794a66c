#pragma once
// Catch2 v2 has no SKIP. A test that cannot run here says why with this marker and
// returns; CTest's SKIP_REGULAR_EXPRESSION (tests/CMakeLists.txt) reports it as skipped,
// not passed.
#include <catch2/catch.hpp>

#define COROCKPT_SKIP(reason)                  \
  do {                                         \
    WARN("corockpt-test-skipped: " << reason); \
    return;                                    \
  } while (false)
