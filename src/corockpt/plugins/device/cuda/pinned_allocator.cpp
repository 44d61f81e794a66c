// The pinned staging allocator: the runtime's host allocator (anonymous mmap, huge pages
// for large buffers) with every allocation registered with cudaHostRegister.
#include <cuda_runtime.h>

#include <string>

#include "corockpt/plugins/device/cuda/cuda_device.hpp"
#include "corockpt/plugins/device/cuda/cuda_error.hpp"

namespace corockpt {

namespace {

using cuda_detail::cuda_error;
using cuda_detail::use_device;

class PinnedAllocator final : public BufferAllocator {
 public:
  explicit PinnedAllocator(int device) : device_(device), host_(make_host_allocator()) {}

  Result<std::byte*> allocate(std::size_t bytes, std::size_t alignment) override {
    auto memory = host_->allocate(bytes, alignment);
    if (!memory || bytes == 0) return memory;
    Result<void> registered = use_device(device_);
    if (registered) {
      // Portable: pinned for every device of the process, not only `device_`.
      if (cudaError_t code = cudaHostRegister(*memory, bytes, cudaHostRegisterPortable); code != cudaSuccess) {
        registered = fail(cuda_error(code, "cudaHostRegister"));
      }
    }
    if (!registered) {
      host_->deallocate(*memory, bytes);
      registered.error().message += " (" + std::to_string(bytes) + " bytes of staging)";
      return fail(std::move(registered.error()));
    }
    return memory;
  }

  void deallocate(std::byte* memory, std::size_t bytes) override {
    if (bytes != 0) {
      (void)use_device(device_);
      (void)cudaHostUnregister(memory);  // nothing to do about a failure: the pages are unmapped next
    }
    host_->deallocate(memory, bytes);
  }

  std::string_view name() const override { return "cuda-pinned"; }

 private:
  int device_;
  std::shared_ptr<BufferAllocator> host_;
};

}  // namespace

Result<std::shared_ptr<BufferAllocator>> make_cuda_pinned_allocator(int device) {
  auto count = cuda_device_count();
  if (!count) return fail(std::move(count.error()));
  if (device < 0 || device >= *count) {
    return fail(Errc::unavailable,
                "cuda:" + std::to_string(device) + " does not exist: this process sees " + std::to_string(*count) +
                    " CUDA device(s)",
                {.operation = "make_cuda_pinned_allocator"});
  }
  return std::shared_ptr<BufferAllocator>(std::make_shared<PinnedAllocator>(device));
}

}  // namespace corockpt
