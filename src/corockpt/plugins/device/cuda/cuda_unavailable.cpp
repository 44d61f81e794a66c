// Built instead of the cuda device plugin when CUDA is missing or COROCKPT_WITH_CUDA is
// OFF: the functions exist, and say why they cannot work.
#include "corockpt/plugins/device/cuda/cuda_device.hpp"

namespace corockpt {

namespace {

std::unexpected<Error> built_without_cuda(const char* operation) {
  return fail(Errc::unavailable,
              "corockpt was built without CUDA: configure with -DCOROCKPT_WITH_CUDA=ON on a machine with the CUDA "
              "toolkit (looked for under /usr/local/cuda)",
              {.operation = operation});
}

}  // namespace

Result<int> cuda_device_count() { return built_without_cuda("cuda_device_count"); }

Result<std::shared_ptr<Device>> make_cuda_device(Runtime&, CudaDeviceOptions) {
  return built_without_cuda("make_cuda_device");
}

Result<std::shared_ptr<BufferAllocator>> make_cuda_pinned_allocator(int) {
  return built_without_cuda("make_cuda_pinned_allocator");
}

}  // namespace corockpt
