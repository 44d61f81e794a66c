// The cuda device on a real GPU. Without one (no driver, no device, or corockpt built
// without CUDA) the program prints why and exits 77, which CTest reports as skipped (tests/support/cuda_test_main.cpp).
#include "corockpt/plugins/device/cuda/cuda_device.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "corockpt/runtime/when_all.hpp"
#include "tests/support/run_sync.hpp"

using namespace corockpt;
using namespace corockpt::test;

namespace {

// Word i of a buffer that starts `offset` bytes into the tensor: a wrong or missing
// chunk cannot go unnoticed.
std::uint64_t word(std::size_t global_index) { return (global_index + 1) * 0x9E3779B97F4A7C15ull; }

void fill(std::span<std::byte> bytes, std::size_t offset) {
  for (std::size_t i = 0; i < bytes.size() / 8; ++i) {
    const std::uint64_t w = word(offset / 8 + i);
    std::memcpy(bytes.data() + i * 8, &w, 8);
  }
}

bool holds(std::span<const std::byte> bytes, std::size_t offset) {
  for (std::size_t i = 0; i < bytes.size() / 8; ++i) {
    std::uint64_t w = 0;
    std::memcpy(&w, bytes.data() + i * 8, 8);
    if (w != word(offset / 8 + i)) return false;
  }
  return true;
}

std::string text(const Result<void>& r) { return r ? std::string("ok") : r.error().to_string(); }

std::shared_ptr<Device> make_device(Runtime& rt) {
  auto device = make_cuda_device(rt);
  INFO((device ? std::string("ok") : device.error().to_string()));
  REQUIRE(device);
  return *device;
}

// One chunk of the snapshot path: a staging buffer from the pool, the copy into it, the
// check of its bytes (standing in for the write), the buffer back to the pool.
Task<void> copy_chunk_to_host(Device& device, BufferPool& pool, std::span<const std::byte> tensor,
                              std::size_t offset, bool* matched) {
  auto staging = co_await pool.acquire();
  if (!staging) co_return fail(staging.error());
  const std::size_t n = std::min(pool.buffer_bytes(), tensor.size() - offset);
  auto into = staging->bytes().first(n);
  auto copied = co_await device.copy_to_host(into, tensor.subspan(offset, n));
  if (!copied) co_return copied;
  if (!holds(into, offset)) *matched = false;
  co_return Result<void>{};
}

Task<void> copy_chunk_to_device(Device& device, BufferPool& pool, std::span<std::byte> tensor, std::size_t offset) {
  auto staging = co_await pool.acquire();
  if (!staging) co_return fail(staging.error());
  const std::size_t n = std::min(pool.buffer_bytes(), tensor.size() - offset);
  auto from = staging->bytes().first(n);
  fill(from, offset);
  co_return co_await device.copy_to_device(tensor.subspan(offset, n), from);
}

Task<void> all_of(std::vector<Task<void>> tasks) {
  auto results = co_await when_all(std::move(tasks));
  co_return all_ok(results);
}

}  // namespace

TEST_CASE("device cuda - 1 GiB copied to the host through the pinned pool matches byte for byte", "[device][cuda]") {
  Runtime rt;
  auto device = make_device(rt);
  CHECK(device->backend() == "cuda");
  CHECK(device->name() == "cuda:0");
  constexpr std::size_t total = std::size_t{1} << 30;
  auto tensor = device->allocate(total);
  INFO((tensor ? std::string("ok") : tensor.error().to_string()));
  REQUIRE(tensor);
  CHECK(tensor->space() == MemorySpace::cuda);
  auto allocator = device->staging_allocator();
  CHECK(allocator->name() == "cuda-pinned");
  auto pool = BufferPool::create({.buffer_bytes = 64 << 20, .buffer_count = 4}, allocator);
  INFO((pool ? std::string("ok") : pool.error().to_string()));
  REQUIRE(pool);

  std::vector<Task<void>> uploads;
  for (std::size_t offset = 0; offset < total; offset += (*pool)->buffer_bytes()) {
    uploads.push_back(copy_chunk_to_device(*device, **pool, tensor->bytes(), offset));
  }
  auto uploaded = run_sync(rt, all_of(std::move(uploads)));
  INFO(text(uploaded));
  REQUIRE(uploaded);

  bool matched = true;
  std::vector<Task<void>> snapshots;
  for (std::size_t offset = 0; offset < total; offset += (*pool)->buffer_bytes()) {
    snapshots.push_back(copy_chunk_to_host(*device, **pool, tensor->bytes(), offset, &matched));
  }
  auto snapshot = run_sync(rt, all_of(std::move(snapshots)));
  INFO(text(snapshot));
  REQUIRE(snapshot);
  CHECK(matched);
  CHECK((*pool)->available() == (*pool)->buffer_count());
}

TEST_CASE("device cuda - pageable host memory round trips through the device", "[device][cuda]") {
  Runtime rt;
  auto device = make_device(rt);
  const std::size_t n = (std::size_t{3} << 20) + 8;
  std::vector<std::byte> source(n);
  fill(source, 0);
  std::vector<std::byte> back(n);
  auto tensor = device->allocate(n);
  REQUIRE(tensor);
  REQUIRE(device->order_after_compute());
  auto in = run_sync(rt, device->copy_to_device(tensor->bytes(), source));
  INFO(text(in));
  REQUIRE(in);
  auto out = run_sync(rt, device->copy_to_host(back, tensor->bytes()));
  INFO(text(out));
  REQUIRE(out);
  CHECK(back == source);
}

TEST_CASE("device cuda - host memory passed as the device side is an invalid argument", "[device][cuda]") {
  Runtime rt;
  auto device = make_device(rt);
  std::vector<std::byte> host(4096);
  std::vector<std::byte> other(4096);
  auto done = run_sync(rt, device->copy_to_host(host, other));
  REQUIRE_FALSE(done);
  CHECK(done.error().code == Errc::invalid_argument);
  CHECK_THAT(done.error().message, Catch::Contains("not memory of cuda:0"));
  auto tensor = device->allocate(4096);
  REQUIRE(tensor);
  auto unequal = run_sync(rt, device->copy_to_host(std::span(host).first(100), tensor->bytes()));
  REQUIRE_FALSE(unequal);
  CHECK(unequal.error().code == Errc::invalid_argument);
  // Argument errors do not break the device.
  CHECK(run_sync(rt, device->copy_to_host(host, tensor->bytes())));
}

TEST_CASE("device cuda - a failing CUDA call is an Error naming it", "[device][cuda]") {
  Runtime rt;
  auto device = make_device(rt);
  auto huge = device->allocate(std::size_t{1} << 52);  // 4 PiB
  REQUIRE_FALSE(huge);
  CHECK(huge.error().code == Errc::no_space);
  CHECK_THAT(huge.error().message, Catch::StartsWith("cudaMalloc: "));
  auto missing = make_cuda_device(rt, {.device = 1 << 20});
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == Errc::unavailable);
}

TEST_CASE("device cuda - a batch of pieces in every direction with one completion each", "[device][cuda]") {
  Runtime rt;
  auto device = make_device(rt);
  constexpr std::size_t piece = 1000;  // odd sizes and offsets: no alignment to lean on
  std::vector<std::byte> source(3 * piece), back(3 * piece);
  for (std::size_t i = 0; i < source.size(); ++i) source[i] = static_cast<std::byte>(i * 7 + 3);
  auto first = device->allocate(3 * piece);
  auto second = device->allocate(3 * piece);
  REQUIRE(first);
  REQUIRE(second);
  // Host pieces in order into the device; rotated by one piece within it; back in order.
  std::vector<CopyPiece> up, across, down;
  for (std::size_t k = 0; k < 3; ++k) {
    up.push_back({first->data() + k * piece, source.data() + k * piece, piece});
    across.push_back({second->data() + ((k + 1) % 3) * piece, first->data() + k * piece, piece});
    down.push_back({back.data() + k * piece, second->data() + k * piece, piece});
  }
  REQUIRE(run_sync(rt, device->copy(CopyDirection::to_device, up)));
  REQUIRE(run_sync(rt, device->copy(CopyDirection::within_device, across)));
  REQUIRE(run_sync(rt, device->copy(CopyDirection::to_host, down)));
  for (std::size_t k = 0; k < 3; ++k) {
    const std::size_t from = ((k + 2) % 3) * piece;  // second's piece k came from first's piece k-1
    CHECK(std::memcmp(back.data() + k * piece, source.data() + from, piece) == 0);
  }
  // A batch whose pieces lie in the wrong space is refused, naming the side.
  std::vector<CopyPiece> wrong{{back.data(), source.data(), piece}};
  auto refused = run_sync(rt, device->copy(CopyDirection::within_device, wrong));
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == Errc::invalid_argument);
  CHECK_THAT(refused.error().message, Catch::Contains("destination is not memory of cuda:0"));
}
