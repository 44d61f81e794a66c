#include "corockpt/ckpt/format/crc32c.hpp"

#include <isa-l/crc.h>

#include <algorithm>

namespace corockpt {

std::uint32_t crc32c(std::span<const std::byte> data) {
  // ISA-L's crc32_iscsi neither inverts its seed nor its result, and takes an int
  // length; the standard CRC-32C starts from ~0 and inverts at the end, and the
  // running value can be carried across pieces, so large spans go in 1 GiB steps.
  constexpr std::size_t max_step = std::size_t{1} << 30;
  unsigned int state = 0xFFFFFFFFu;
  while (!data.empty()) {
    const std::size_t step = std::min(data.size(), max_step);
    // ISA-L only reads the buffer; its parameter is not const-qualified.
    auto* bytes = const_cast<unsigned char*>(reinterpret_cast<const unsigned char*>(data.data()));
    state = crc32_iscsi(bytes, static_cast<int>(step), state);
    data = data.subspan(step);
  }
  return ~state;
}

namespace {

// Polynomials over GF(2) modulo CRC-32C's, in the CRC's reflected bit order: the
// coefficient of x^0 is the top bit.
constexpr std::uint32_t reflected_polynomial = 0x82F63B78u;
constexpr std::uint32_t x_to_the_0 = 1u << 31;

std::uint32_t multiply_mod_p(std::uint32_t a, std::uint32_t b) {
  std::uint32_t product = 0;
  for (std::uint32_t bit = x_to_the_0; bit != 0; bit >>= 1) {
    if (a & bit) product ^= b;
    b = (b & 1u) ? (b >> 1) ^ reflected_polynomial : b >> 1;  // b *= x
  }
  return product;
}

// x^(8 * bytes) mod P, by squaring.
std::uint32_t x_to_the_bits_of(std::uint64_t bytes) {
  std::uint32_t result = x_to_the_0;
  std::uint32_t power = x_to_the_0 >> 8;  // x^8: one byte
  for (; bytes != 0; bytes >>= 1) {
    if (bytes & 1u) result = multiply_mod_p(result, power);
    power = multiply_mod_p(power, power);
  }
  return result;
}

}  // namespace

std::uint32_t crc32c_combine(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t length_b) {
  // The CRC is linear: crc(A || B) is crc(A) shifted past B's bits, plus crc(B); the
  // initial value and the final inversion cancel out in that sum.
  return multiply_mod_p(x_to_the_bits_of(length_b), crc_a) ^ crc_b;
}

}  // namespace corockpt
