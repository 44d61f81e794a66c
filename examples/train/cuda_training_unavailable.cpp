// Built instead of cuda_training.cpp when corockpt has no CUDA or no nvcc: the functions
// exist, and say why they cannot work.
#include "examples/train/cuda_training.hpp"

#include "corockpt/plugins/device/cuda/cuda_device.hpp"

namespace corockpt::example {

namespace {

std::unexpected<Error> unavailable() {
  // Without CUDA at all, the device plugin's own message names the CMake option.
  if (auto count = cuda_device_count(); !count) return fail(std::move(count.error()));
  return fail(Errc::unavailable,
              "corockpt was built without the example's CUDA kernels: CMake found CUDA but no working nvcc "
              "(put it on PATH or set CMAKE_CUDA_COMPILER, then reconfigure)");
}

}  // namespace

Result<int> gpu_for_rank(int) { return unavailable(); }
Result<std::unique_ptr<GpuRank>> make_gpu_rank(Runtime&, int) { return unavailable(); }
Result<std::unique_ptr<CudaTrainer>> make_cuda_trainer(Model&, GpuRank&) { return unavailable(); }

}  // namespace corockpt::example
