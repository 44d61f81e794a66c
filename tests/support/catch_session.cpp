// Catch2's implementation, compiled once for every test program (Catch2 v2 is
// header-only; this is its one implementation unit). The programs bring their main:
// catch_main.cpp for most, their own where MPI or a GPU check comes first.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "tests/support/catch_session.hpp"

namespace corockpt::test {

int run_catch(int argc, char* argv[]) { return Catch::Session().run(argc, argv); }

}  // namespace corockpt::test
