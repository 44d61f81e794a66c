// The main of the test programs that need nothing before Catch2 runs.
#include "tests/support/catch_session.hpp"

int main(int argc, char* argv[]) { return corockpt::test::run_catch(argc, argv); }
