#include "corockpt/plugins/device/host/host_device.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <vector>

#include "corockpt/plugins/device/cuda/cuda_device.hpp"
#include "corockpt/runtime/when_all.hpp"
#include "tests/support/run_sync.hpp"

using namespace corockpt;
using namespace corockpt::test;

namespace {

std::vector<std::byte> pattern(std::size_t n, unsigned salt) {
  std::vector<std::byte> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>((i * 131 + salt) & 0xff);
  return out;
}

std::string text(const Result<void>& r) { return r ? std::string("ok") : r.error().to_string(); }

}  // namespace

TEST_CASE("device host - copies to the host and back match byte for byte", "[device]") {
  Runtime rt;
  auto device = make_host_device(rt);
  CHECK(device->backend() == "host");
  CHECK(device->space() == MemorySpace::host);
  CHECK(device->name() == "host");
  // Below the inline threshold, and above it (the worker pool).
  for (std::size_t n : {std::size_t{1}, std::size_t{4097}, std::size_t{3} << 20}) {
    auto tensor = device->allocate(n);
    REQUIRE(tensor);
    CHECK(tensor->space() == MemorySpace::host);
    const auto source = pattern(n, static_cast<unsigned>(n));
    std::vector<std::byte> back(n);
    auto round_trip = [&]() -> Task<void> {
      auto in = co_await device->copy_to_device(tensor->bytes(), source);
      if (!in) co_return in;
      co_return co_await device->copy_to_host(back, tensor->bytes());
    };
    auto done = run_sync(rt, round_trip());
    INFO(text(done));
    REQUIRE(done);
    CHECK(std::memcmp(back.data(), source.data(), n) == 0);
  }
}

TEST_CASE("device host - many copies in flight each land in their own buffer", "[device]") {
  Runtime rt;
  auto device = make_host_device(rt, {.inline_copy_bytes = 0});
  constexpr std::size_t chunk = 1 << 20;
  constexpr int chunks = 8;
  const auto source = pattern(chunk * chunks, 7);
  std::vector<std::byte> target(chunk * chunks);
  std::vector<Task<void>> copies;
  for (int i = 0; i < chunks; ++i) {
    auto offset = static_cast<std::size_t>(i) * chunk;
    copies.push_back(device->copy_to_host(std::span(target).subspan(offset, chunk),
                                          std::span(source).subspan(offset, chunk)));
  }
  auto results = run_sync(rt, [](std::vector<Task<void>> tasks) -> Task<std::vector<Result<void>>> {
                   co_return co_await when_all(std::move(tasks));
                 }(std::move(copies)));
  REQUIRE(results);
  for (const auto& r : *results) CHECK(r);
  CHECK(target == source);
}

TEST_CASE("device host - copies of unequal sizes are invalid arguments", "[device]") {
  Runtime rt;
  auto device = make_host_device(rt);
  std::vector<std::byte> small(8);
  std::vector<std::byte> large(9);
  auto done = run_sync(rt, device->copy_to_host(small, large));
  REQUIRE_FALSE(done);
  CHECK(done.error().code == Errc::invalid_argument);
  CHECK(run_sync(rt, device->copy_to_device(std::span<std::byte>(), std::span<const std::byte>())));
}

TEST_CASE("device host - allocations are aligned and the staging pool uses the host allocator", "[device]") {
  Runtime rt;
  auto device = make_host_device(rt);
  auto memory = device->allocate(1000);
  REQUIRE(memory);
  CHECK(reinterpret_cast<std::uintptr_t>(memory->data()) % 256 == 0);
  CHECK(memory->size() == 1000);
  CHECK(device->order_after_compute());
  auto allocator = device->staging_allocator();
  REQUIRE(allocator);
  CHECK(allocator->name() == "host");
  auto pool = BufferPool::create({.buffer_bytes = 1 << 20, .buffer_count = 2}, allocator);
  REQUIRE(pool);
  auto staging = (*pool)->try_acquire();
  REQUIRE(staging);
  const auto source = pattern(staging.size(), 3);
  auto tensor = device->allocate(source.size());
  REQUIRE(tensor);
  std::memcpy(tensor->data(), source.data(), source.size());
  REQUIRE(run_sync(rt, device->copy_to_host(staging.bytes(), tensor->bytes())));
  CHECK(std::memcmp(staging.data(), source.data(), source.size()) == 0);
}

TEST_CASE("device cuda - without a usable GPU every factory says why", "[device][cuda]") {
  auto count = cuda_device_count();
  if (count) return;  // a GPU is here: test_device_cuda covers it
  CHECK(count.error().code == Errc::unavailable);
  CHECK_FALSE(count.error().message.empty());
  Runtime rt;
  auto device = make_cuda_device(rt);
  REQUIRE_FALSE(device);
  CHECK(device.error().code == Errc::unavailable);
  auto pinned = make_cuda_pinned_allocator();
  REQUIRE_FALSE(pinned);
  CHECK(pinned.error().code == Errc::unavailable);
}
