#include "corockpt/ckpt/format/crc32c.hpp"

#include <catch2/catch.hpp>
#include <cstdint>
#include <numeric>
#include <random>
#include <string_view>
#include <vector>

using namespace corockpt;

namespace {

std::span<const std::byte> bytes_of(std::string_view text) { return std::as_bytes(std::span(text.data(), text.size())); }

// The definition, one bit at a time (reflected polynomial 0x82F63B78), to check the
// accelerated one against.
std::uint32_t reference_crc32c(std::span<const std::byte> data) {
  std::uint32_t crc = 0xFFFFFFFFu;
  for (std::byte b : data) {
    crc ^= std::to_integer<std::uint32_t>(b);
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

}  // namespace

TEST_CASE("crc32c - the standard check value and the iSCSI test vectors") {
  CHECK(crc32c(bytes_of("123456789")) == 0xE3069283u);
  CHECK(crc32c({}) == 0u);

  // RFC 3720, appendix B.4.
  std::vector<std::byte> block(32, std::byte{0});
  CHECK(crc32c(block) == 0x8A9136AAu);
  std::fill(block.begin(), block.end(), std::byte{0xFF});
  CHECK(crc32c(block) == 0x62A8AB43u);
  for (std::size_t i = 0; i < block.size(); ++i) block[i] = static_cast<std::byte>(i);
  CHECK(crc32c(block) == 0x46DD794Eu);
  for (std::size_t i = 0; i < block.size(); ++i) block[i] = static_cast<std::byte>(31 - i);
  CHECK(crc32c(block) == 0x113FDB5Cu);
}

TEST_CASE("crc32c - every call stands alone: no state carries from one call to the next") {
  const auto first = crc32c(bytes_of("123456789"));
  CHECK(crc32c(bytes_of("abc")) != first);
  CHECK(crc32c(bytes_of("123456789")) == first);
  CHECK(crc32c(bytes_of("")) == 0u);
  CHECK(crc32c(bytes_of("123456789")) == first);
}

TEST_CASE("crc32c - matches the bitwise definition at every length and alignment") {
  std::mt19937 random(7);
  std::vector<std::byte> buffer(5000);
  for (auto& b : buffer) b = static_cast<std::byte>(random());
  for (std::size_t start = 0; start < 9; ++start) {
    for (std::size_t length : {0, 1, 3, 7, 8, 15, 16, 31, 64, 255, 256, 1000, 4096, 4990}) {
      const auto piece = std::span<const std::byte>(buffer).subspan(start, length);
      INFO("start " << start << ", length " << length);
      CHECK(crc32c(piece) == reference_crc32c(piece));
    }
  }
}

TEST_CASE("crc32c - combining the checksums of two pieces gives the checksum of both") {
  std::mt19937 random(7);
  std::vector<std::byte> data(70000);
  for (auto& b : data) b = static_cast<std::byte>(random());
  const std::span<const std::byte> all(data);
  for (std::size_t split : {std::size_t{0}, std::size_t{1}, std::size_t{3}, std::size_t{4096}, std::size_t{69999},
                            std::size_t{70000}}) {
    INFO("split at " << split);
    const auto a = all.first(split), b = all.subspan(split);
    CHECK(crc32c_combine(crc32c(a), crc32c(b), b.size()) == crc32c(all));
  }
  // Three pieces, folded left to right.
  const auto a = all.first(1000), b = all.subspan(1000, 30000), c = all.subspan(31000);
  const std::uint32_t ab = crc32c_combine(crc32c(a), crc32c(b), b.size());
  CHECK(crc32c_combine(ab, crc32c(c), c.size()) == crc32c(all));
}
