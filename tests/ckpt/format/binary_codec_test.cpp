// The varints and fixed fields of the index files and plans: every length read back,
// wherever it lies in the bytes (the reader takes a faster path away from their end),
// and bytes that end early or run on refused.
#include "corockpt/ckpt/format/binary_codec.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <vector>

using corockpt::detail::ByteReader;
using corockpt::detail::ByteWriter;

TEST_CASE("binary codec - varints of every length read back, near the end of the bytes or not") {
  std::vector<std::uint64_t> values{0, 1, 127, 128, 300, 16383, 16384, (1u << 21) - 1, 1u << 21, 1ull << 35,
                                    std::numeric_limits<std::uint64_t>::max()};
  for (int shift = 0; shift < 64; ++shift) values.push_back((1ull << shift) - 1);
  ByteWriter out;
  for (std::uint64_t v : values) {
    out.varint(v);
    out.svarint(-static_cast<std::int64_t>(v >> 1));
    out.fixed<std::uint32_t>(static_cast<std::uint32_t>(v));
  }
  ByteReader in(out.bytes());
  for (std::uint64_t v : values) {
    INFO(v);
    CHECK(in.varint() == v);
    CHECK(in.svarint() == -static_cast<std::int64_t>(v >> 1));
    CHECK(in.fixed<std::uint32_t>() == static_cast<std::uint32_t>(v));
  }
  CHECK(in.done());
  CHECK_FALSE(in.failed);
}

TEST_CASE("binary codec - a varint cut short, or longer than 64 bits, fails the reader") {
  for (std::uint64_t v : {200ull, 1ull << 20, 1ull << 40}) {
    ByteWriter out;
    out.varint(v);
    const std::string bytes = out.bytes();
    for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
      const std::string cut_short = bytes.substr(0, cut);  // the reader views, not owns
      ByteReader in(cut_short);
      CHECK(in.varint() == 0);
      CHECK(in.failed);
    }
  }
  // Continuation bytes past the faster path's three, with room for it to be taken.
  const std::string continuations(12, '\x80');
  ByteReader endless(continuations);
  CHECK(endless.varint() == 0);
  CHECK(endless.failed);
  const std::string too_long = std::string(10, '\xff') + '\x01';
  ByteReader eleven(too_long);
  eleven.varint();
  CHECK(eleven.failed);
}
