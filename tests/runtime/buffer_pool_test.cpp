#include "corockpt/runtime/buffer_pool.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <set>

#include "tests/support/run_sync.hpp"

using namespace corockpt;
using namespace std::chrono_literals;

TEST_CASE("buffer_pool - buffers are aligned, sized and allocated once") {
  auto pool = BufferPool::create({.buffer_bytes = 10000, .buffer_count = 3, .alignment = 4096}, make_host_allocator());
  REQUIRE(pool);
  auto& p = **pool;
  CHECK(p.buffer_count() == 3);
  CHECK(p.buffer_bytes() == 12288);  // rounded up to the alignment
  CHECK(p.total_bytes() == 3 * 12288);
  std::set<std::byte*> seen;
  for (int round = 0; round < 5; ++round) {
    auto a = p.try_acquire();
    auto b = p.try_acquire();
    REQUIRE(a);
    REQUIRE(b);
    CHECK(reinterpret_cast<std::uintptr_t>(a.data()) % 4096 == 0);
    seen.insert(a.data());
    seen.insert(b.data());
  }
  CHECK(seen.size() <= 3);  // reused, never grown
  CHECK(p.available() == 3);
}

TEST_CASE("buffer_pool - acquiring from an empty pool suspends until a buffer returns") {
  Runtime rt;
  auto pool = BufferPool::create({.buffer_bytes = 4096, .buffer_count = 2}, make_host_allocator()).value();
  auto first = pool->try_acquire();
  auto second = pool->try_acquire();
  REQUIRE(second);
  CHECK_FALSE(pool->try_acquire());

  auto waiting = rt.spawn([](BufferPool& p) -> Task<std::size_t> {
    auto b = co_await p.acquire();
    if (!b) co_return fail(b.error());
    co_return b->index();
  }(*pool));
  CHECK_FALSE(waiting.wait_for(50ms));  // blocked: backpressure
  std::size_t returned = first.index();
  first.reset();
  auto got = waiting.get();
  REQUIRE(got);
  CHECK(*got == returned);
  CHECK(pool->available() == 1);  // the waiter's buffer went back when it was dropped
}

TEST_CASE("buffer_pool - a cancelled acquire gives up its place and loses no buffer") {
  Runtime rt;
  auto pool = BufferPool::create({.buffer_bytes = 4096, .buffer_count = 1}, make_host_allocator()).value();
  auto only = pool->try_acquire();
  auto waiting = rt.spawn([](BufferPool& p) -> Task<std::size_t> {
    auto b = co_await p.acquire();
    if (!b) co_return fail(b.error());
    co_return b->index();
  }(*pool));
  REQUIRE_FALSE(waiting.wait_for(20ms));
  waiting.cancel();
  auto r = waiting.get();
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::cancelled);
  only.reset();
  CHECK(pool->available() == 1);
}

TEST_CASE("buffer_pool - bad options are refused with a reason") {
  auto bad_alignment = BufferPool::create({.buffer_bytes = 4096, .buffer_count = 1, .alignment = 512},
                                          make_host_allocator());
  REQUIRE_FALSE(bad_alignment);
  CHECK(bad_alignment.error().code == Errc::invalid_argument);
  auto empty = BufferPool::create({.buffer_bytes = 4096, .buffer_count = 0}, make_host_allocator());
  REQUIRE_FALSE(empty);
}

TEST_CASE("buffer_pool - the host allocator puts large buffers on huge-page boundaries and small ones on pages") {
  auto allocator = make_host_allocator();
  for (std::size_t bytes : {std::size_t{4096}, std::size_t{10000}, std::size_t{2} << 20, (std::size_t{5} << 20) + 1}) {
    auto memory = allocator->allocate(bytes, 4096);
    REQUIRE(memory);
    const auto address = reinterpret_cast<std::uintptr_t>(*memory);
    CHECK(address % 4096 == 0);
    if (bytes >= (std::size_t{2} << 20)) CHECK(address % (std::size_t{2} << 20) == 0);
    // Every byte is usable (the trimmed over-mapping left none of it out).
    for (std::size_t i = 0; i < bytes; i += 4096) (*memory)[i] = std::byte{1};
    (*memory)[bytes - 1] = std::byte{2};
    allocator->deallocate(*memory, bytes);
  }
  CHECK_FALSE(allocator->allocate(4096, 8192));  // larger alignments are refused
}
