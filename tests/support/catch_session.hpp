#pragma once
// Runs Catch2 (its implementation is compiled once, in catch_session.cpp): what a test
// program's main calls. Catch2 v2 declares its Session only where it compiles itself.

namespace corockpt::test {

/// Catch::Session().run(argc, argv): every selected test case; the number that failed.
int run_catch(int argc, char* argv[]);

}  // namespace corockpt::test
