#pragma once
/// @file
/// Little-endian fields and LEB128 varints for the binary index files (chunk_index.hpp)
/// and the plans ranks send their coordinator. The reader never reads past its bytes: a
/// read that would sets `failed` and gives 0, so a decoder checks once, at the end of a
/// record, instead of after every field.

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace corockpt::detail {

static_assert(std::endian::native == std::endian::little, "the index files are written as this machine lays out");

class ByteWriter {
 public:
  template <class T>
  void fixed(T value) {
    static_assert(std::is_integral_v<T>);
    out_.append(reinterpret_cast<const char*>(&value), sizeof value);
  }
  void varint(std::uint64_t value) {
    while (value >= 0x80) {
      out_.push_back(static_cast<char>(value | 0x80));
      value >>= 7;
    }
    out_.push_back(static_cast<char>(value));
  }
  /// A signed value, zigzag-coded so that small negatives stay short.
  void svarint(std::int64_t value) {
    varint((static_cast<std::uint64_t>(value) << 1) ^ static_cast<std::uint64_t>(value >> 63));
  }
  void text(std::string_view value) {
    varint(value.size());
    out_.append(value);
  }
  void raw(std::string_view bytes) { out_.append(bytes); }
  std::size_t size() const { return out_.size(); }
  /// Overwrites a fixed field written earlier at byte `at`.
  template <class T>
  void patch(std::size_t at, T value) {
    std::memcpy(out_.data() + at, &value, sizeof value);
  }
  std::string& bytes() { return out_; }

 private:
  std::string out_;
};

class ByteReader {
 public:
  explicit ByteReader(std::string_view bytes) : bytes_(bytes) {}

  template <class T>
  T fixed() {
    static_assert(std::is_integral_v<T>);
    T value{};
    if (!has(sizeof value)) return value;
    std::memcpy(&value, bytes_.data() + at_, sizeof value);
    at_ += sizeof value;
    return value;
  }
  std::uint64_t varint() {
    // Values below 2^21 (dims, counts, ranks, rows) take one to three bytes: decoded
    // inline with one bounds check, where there is room for the longest varint. The
    // coordinator's merge reads tens of millions of them.
    if (!failed && bytes_.size() - at_ >= 10) {
      const auto* p = reinterpret_cast<const std::uint8_t*>(bytes_.data()) + at_;
      std::uint64_t value = p[0] & 0x7f;
      if (p[0] < 0x80) {
        at_ += 1;
        return value;
      }
      value |= static_cast<std::uint64_t>(p[1] & 0x7f) << 7;
      if (p[1] < 0x80) {
        at_ += 2;
        return value;
      }
      value |= static_cast<std::uint64_t>(p[2] & 0x7f) << 14;
      if (p[2] < 0x80) {
        at_ += 3;
        return value;
      }
    }
    return long_varint();
  }
  std::int64_t svarint() {
    const std::uint64_t coded = varint();
    return static_cast<std::int64_t>((coded >> 1) ^ (~(coded & 1) + 1));
  }
  std::string_view text() {
    const std::uint64_t length = varint();
    if (!has(length)) return {};
    const std::string_view out = bytes_.substr(at_, length);
    at_ += length;
    return out;
  }
  std::string_view raw(std::uint64_t length) {
    if (!has(length)) return {};
    const std::string_view out = bytes_.substr(at_, length);
    at_ += length;
    return out;
  }
  std::size_t at() const { return at_; }
  std::size_t left() const { return bytes_.size() - at_; }
  bool done() const { return at_ == bytes_.size(); }

  bool failed = false;

 private:
  bool has(std::uint64_t n) {
    if (!failed && n <= bytes_.size() - at_) return true;
    failed = true;
    return false;
  }
  [[gnu::noinline]] std::uint64_t long_varint() {
    std::uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (!has(1)) return 0;
      const auto byte = static_cast<std::uint8_t>(bytes_[at_++]);
      value |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return value;
    }
    failed = true;  // longer than any 64-bit value
    return 0;
  }
  std::string_view bytes_;
  std::size_t at_ = 0;
};

}  // namespace corockpt::detail
