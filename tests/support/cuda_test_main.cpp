// The main of the test programs that need a GPU: without one (no driver, no device, or
// corockpt built without CUDA) it prints why and exits 77, which CTest reports as skipped.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>

#include "corockpt/plugins/device/cuda/cuda_device.hpp"

int main(int argc, char* argv[]) {
  auto count = corockpt::cuda_device_count();
  if (!count) {
    std::printf("skipped: no usable GPU: %s\n", count.error().to_string().c_str());
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
