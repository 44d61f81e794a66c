#include "corockpt/plugins/device/host/host_device.hpp"

#include <cstring>
#include <new>
#include <string>

#include "corockpt/runtime/trace.hpp"

namespace corockpt {

namespace {

constexpr std::align_val_t host_alignment{256};

class HostDevice final : public Device {
 public:
  HostDevice(Runtime& runtime, HostDeviceOptions options)
      : runtime_(runtime), options_(options), staging_(make_host_allocator()) {}

  std::string_view backend() const override { return "host"; }
  MemorySpace space() const override { return MemorySpace::host; }
  const std::string& name() const override { return name_; }

  Result<DeviceMemory> allocate(std::size_t bytes) override {
    auto* memory = static_cast<std::byte*>(::operator new(bytes == 0 ? 1 : bytes, host_alignment, std::nothrow));
    if (memory == nullptr) {
      return fail(Errc::no_space, "host: cannot allocate " + std::to_string(bytes) + " bytes",
                  {.operation = "allocate"});
    }
    std::shared_ptr<std::byte> owned(memory, [](std::byte* p) { ::operator delete(p, host_alignment); });
    return DeviceMemory(std::move(owned), bytes, MemorySpace::host);
  }

  Task<void> copy(CopyDirection direction, std::span<const CopyPiece> pieces) override;

  Result<void> order_after_compute() override { return {}; }

  std::shared_ptr<BufferAllocator> staging_allocator() override { return staging_; }

 private:
  Runtime& runtime_;
  HostDeviceOptions options_;
  std::shared_ptr<BufferAllocator> staging_;
  const std::string name_ = "host";
};

Task<void> HostDevice::copy(CopyDirection direction, std::span<const CopyPiece> pieces) {
  std::size_t total = 0;
  for (const CopyPiece& piece : pieces) total += piece.bytes;
  auto copy_all = [pieces] {
    for (const CopyPiece& piece : pieces) {
      if (piece.bytes != 0) std::memcpy(piece.to, piece.from, piece.bytes);  // an empty piece may be null
    }
  };
  if (total < options_.inline_copy_bytes) {
    copy_all();
    co_return Result<void>{};
  }
  ScopedSpan span(runtime_.tracer(), std::string(to_string(direction)) + " (host)", "copy");
  co_return co_await runtime_.offload(copy_all);
}

}  // namespace

std::shared_ptr<Device> make_host_device(Runtime& runtime, HostDeviceOptions options) {
  return std::make_shared<HostDevice>(runtime, options);
}

}  // namespace corockpt
