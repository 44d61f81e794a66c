// The main of the test programs that need a GPU: without one (no driver, no device, or
// corockpt built without CUDA) it prints why and exits 77, which CTest reports as skipped.
#include <catch2/catch.hpp>

#include <cstdio>

#include "corockpt/plugins/device/cuda/cuda_device.hpp"
#include "tests/support/catch_session.hpp"

int main(int argc, char* argv[]) {
  auto count = corockpt::cuda_device_count();
  if (!count) {
    std::printf("skipped: no usable GPU: %s\n", count.error().to_string().c_str());
    return 77;
  }
  return corockpt::test::run_catch(argc, argv);
}
