// copy_past_cache: the bytes of memcpy whatever the size and the alignment of either side.
#include "corockpt/ckpt/detail/copy_past_cache.hpp"

#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

TEST_CASE("copy_past_cache copies exactly the bytes asked for, at any size and alignment") {
  std::vector<std::byte> from(300 << 10), to(300 << 10);
  for (std::size_t i = 0; i < from.size(); ++i) from[i] = static_cast<std::byte>(i * 131 + 7);
  for (std::size_t bytes : {0ul, 1ul, 63ul, 4096ul, (64ul << 10) - 1, 64ul << 10, (64ul << 10) + 17, 200000ul}) {
    for (std::size_t to_at : {0ul, 1ul, 8ul, 15ul}) {
      for (std::size_t from_at : {0ul, 3ul, 16ul}) {
        std::fill(to.begin(), to.end(), std::byte{0xee});
        corockpt::detail::copy_past_cache(to.data() + to_at, from.data() + from_at, bytes);
        INFO(bytes << " bytes to +" << to_at << " from +" << from_at);
        CHECK(std::memcmp(to.data() + to_at, from.data() + from_at, bytes) == 0);
        CHECK(to[to_at + bytes] == std::byte{0xee});  // nothing past the end
        if (to_at > 0) CHECK(to[to_at - 1] == std::byte{0xee});  // nor before the start
      }
    }
  }
}
