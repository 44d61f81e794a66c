#include "plugins/device/host/host_device.hpp"

#include <cstring>
#include <new>
#include <string>

#include "runtime/trace.hpp"

namespace corockpt {

std::string_view to_string(MemorySpace space) {
  switch (space) {
    case MemorySpace::host: return "host";
    case MemorySpace::cuda: return "cuda";
  }
  return "unknown";
}

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

  Task<void> copy_to_host(std::span<std::byte> host, std::span<const std::byte> device) override {
    return copy(host, device, "copy_to_host");
  }
  Task<void> copy_to_device(std::span<std::byte> device, std::span<const std::byte> host) override {
    return copy(device, host, "copy_to_device");
  }

  Result<void> order_after_compute() override { return {}; }

  std::shared_ptr<BufferAllocator> staging_allocator() override { return staging_; }

 private:
  Task<void> copy(std::span<std::byte> to, std::span<const std::byte> from, const char* operation);

  Runtime& runtime_;
  HostDeviceOptions options_;
  std::shared_ptr<BufferAllocator> staging_;
  const std::string name_ = "host";
};

Task<void> HostDevice::copy(std::span<std::byte> to, std::span<const std::byte> from, const char* operation) {
  if (to.size() != from.size()) {
    co_return fail(Errc::invalid_argument,
                   std::string(operation) + " on host: copies " + std::to_string(from.size()) + " bytes into " +
                       std::to_string(to.size()),
                   {.operation = operation});
  }
  if (to.empty()) co_return Result<void>{};
  if (to.size() < options_.inline_copy_bytes) {
    std::memcpy(to.data(), from.data(), to.size());
    co_return Result<void>{};
  }
  ScopedSpan span(runtime_.tracer(), std::string(operation) + " (host)", "copy");
  co_return co_await runtime_.offload([to, from] { std::memcpy(to.data(), from.data(), to.size()); });
}

}  // namespace

std::shared_ptr<Device> make_host_device(Runtime& runtime, HostDeviceOptions options) {
  return std::make_shared<HostDevice>(runtime, options);
}

}  // namespace corockpt
