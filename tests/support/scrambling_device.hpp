#pragma once
// A test double of a GPU: its memory is host memory that holds every byte XOR 0xA5, in
// space `cuda`. Code that reads or writes device memory directly, instead of copying
// through the device, sees or leaves wrong values, and the test checking them fails.
#include <atomic>
#include <cstddef>
#include <memory>
#include <new>
#include <string>

#include "plugins/device/device.hpp"

namespace corockpt::test {

class ScramblingDevice final : public Device {
 public:
  static constexpr std::byte key{0xA5};

  std::string_view backend() const override { return "scrambling"; }
  MemorySpace space() const override { return MemorySpace::cuda; }
  const std::string& name() const override { return name_; }

  Result<DeviceMemory> allocate(std::size_t bytes) override {
    auto* memory = static_cast<std::byte*>(::operator new(bytes == 0 ? 1 : bytes, std::align_val_t{256}));
    std::shared_ptr<std::byte> owned(memory, [](std::byte* p) { ::operator delete(p, std::align_val_t{256}); });
    return DeviceMemory(std::move(owned), bytes, MemorySpace::cuda);
  }
  Task<void> copy_to_host(std::span<std::byte> host, std::span<const std::byte> device) override {
    return copy(host, device);
  }
  Task<void> copy_to_device(std::span<std::byte> device, std::span<const std::byte> host) override {
    return copy(device, host);
  }
  Result<void> order_after_compute() override {
    ++ordered;
    return {};
  }
  std::shared_ptr<BufferAllocator> staging_allocator() override {
    ++staging_allocators;
    return make_host_allocator();
  }

  std::atomic<int> copies{0};
  std::atomic<int> ordered{0};
  std::atomic<int> staging_allocators{0};

 private:
  Task<void> copy(std::span<std::byte> to, std::span<const std::byte> from) {
    if (to.size() != from.size()) co_return fail(Errc::invalid_argument, "scrambling device: sizes differ");
    for (std::size_t i = 0; i < to.size(); ++i) to[i] = from[i] ^ key;
    ++copies;
    co_return Result<void>{};
  }
  const std::string name_ = "scrambling:0";
};

}  // namespace corockpt::test
