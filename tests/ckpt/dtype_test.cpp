#include "corockpt/ckpt/dtype.hpp"

#include <bit>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

using namespace corockpt;

namespace {

constexpr DType kAll[] = {DType::float32, DType::bfloat16, DType::float16, DType::float64,
                          DType::int64,   DType::int32,    DType::uint8,   DType::boolean};

// Converts a vector of `From` values (stored as their C++ type) into `To`s.
template <class To, class From>
std::vector<To> convert_values(const std::vector<From>& in, DType from, DType to) {
  std::vector<To> out(in.size());
  convert(std::as_bytes(std::span(in)), from, std::as_writable_bytes(std::span(out)), to, in.size());
  return out;
}

}  // namespace

TEST_CASE("dtype - sizes and PyTorch names") {
  CHECK(size_of(DType::float32) == 4);
  CHECK(size_of(DType::bfloat16) == 2);
  CHECK(size_of(DType::float16) == 2);
  CHECK(size_of(DType::float64) == 8);
  CHECK(size_of(DType::int64) == 8);
  CHECK(size_of(DType::int32) == 4);
  CHECK(size_of(DType::uint8) == 1);
  CHECK(size_of(DType::boolean) == 1);
  CHECK(to_string(DType::bfloat16) == "bfloat16");
  CHECK(to_string(DType::boolean) == "bool");
  CHECK(safetensors_name(DType::bfloat16) == "BF16");
  CHECK(safetensors_name(DType::boolean) == "BOOL");
  for (DType d : kAll) {
    CHECK(parse_dtype(to_string(d)).value() == d);
    CHECK(parse_safetensors_dtype(safetensors_name(d)).value() == d);
  }
  CHECK(is_floating_point(DType::bfloat16));
  CHECK_FALSE(is_floating_point(DType::boolean));
}

TEST_CASE("dtype - unknown names are errors that name them") {
  auto bad = parse_dtype("float8");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == Errc::invalid_argument);
  CHECK(bad.error().message.find("\"float8\"") != std::string::npos);
  CHECK_FALSE(parse_dtype("F32"));       // a safetensors name is not a PyTorch one
  CHECK_FALSE(parse_dtype("torch.float32"));
  auto bad_st = parse_safetensors_dtype("F8_E4M3");
  REQUIRE_FALSE(bad_st);
  CHECK(bad_st.error().message.find("F8_E4M3") != std::string::npos);
}

TEST_CASE("dtype - bfloat16 rounds to nearest, ties to even") {
  CHECK(float_to_bfloat16_bits(1.0f) == 0x3F80);
  // 1 + 2^-8 is halfway between 0x3F80 and 0x3F81: ties go to the even 0x3F80.
  CHECK(float_to_bfloat16_bits(std::bit_cast<float>(0x3F808000u)) == 0x3F80);
  // Halfway between 0x3F81 and 0x3F82: to the even 0x3F82.
  CHECK(float_to_bfloat16_bits(std::bit_cast<float>(0x3F818000u)) == 0x3F82);
  // Just above halfway: up.
  CHECK(float_to_bfloat16_bits(std::bit_cast<float>(0x3F808001u)) == 0x3F81);
  CHECK(float_to_bfloat16_bits(std::bit_cast<float>(0x3F807FFFu)) == 0x3F80);
  CHECK(float_to_bfloat16_bits(-2.0f) == 0xC000);
  CHECK(float_to_bfloat16_bits(std::numeric_limits<float>::max()) == 0x7F80);  // overflows to inf
  CHECK(float_to_bfloat16_bits(std::numeric_limits<float>::quiet_NaN()) == 0x7FC0);
  CHECK(bfloat16_bits_to_float(0x3F80) == 1.0f);
  // Every non-NaN bfloat16 survives the round trip through float.
  for (std::uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    const float f = bfloat16_bits_to_float(static_cast<std::uint16_t>(bits));
    if (std::isnan(f)) continue;
    REQUIRE(float_to_bfloat16_bits(f) == bits);
  }
}

TEST_CASE("dtype - float16 rounds to nearest even, with subnormals, infinity and NaN") {
  CHECK(float_to_float16_bits(1.0f) == 0x3C00);
  CHECK(float_to_float16_bits(-2.0f) == 0xC000);
  CHECK(float_to_float16_bits(65504.0f) == 0x7BFF);  // the largest half
  CHECK(float_to_float16_bits(65519.0f) == 0x7BFF);
  CHECK(float_to_float16_bits(65520.0f) == 0x7C00);  // the tie rounds to even: infinity
  CHECK(float_to_float16_bits(std::numeric_limits<float>::infinity()) == 0x7C00);
  CHECK(float_to_float16_bits(std::ldexp(1.0f, -14)) == 0x0400);  // smallest normal
  CHECK(float_to_float16_bits(std::ldexp(1.0f, -24)) == 0x0001);  // smallest subnormal
  CHECK(float_to_float16_bits(std::ldexp(1.0f, -25)) == 0x0000);  // tie: to even zero
  CHECK(float_to_float16_bits(std::ldexp(1.5f, -25)) == 0x0001);
  CHECK(float_to_float16_bits(std::ldexp(3.0f, -25)) == 0x0002);  // 1.5 units: tie to even 2
  CHECK(float_to_float16_bits(-0.0f) == 0x8000);
  CHECK(float_to_float16_bits(1.0f + std::ldexp(1.0f, -11)) == 0x3C00);      // tie, even below
  CHECK(float_to_float16_bits(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3C02);  // tie, even above
  const std::uint16_t nan = float_to_float16_bits(std::numeric_limits<float>::quiet_NaN());
  CHECK((nan & 0x7C00) == 0x7C00);
  CHECK((nan & 0x03FF) != 0);
  CHECK(float16_bits_to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(float16_bits_to_float(0xFC00) == -std::numeric_limits<float>::infinity());
  for (std::uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    const float f = float16_bits_to_float(static_cast<std::uint16_t>(bits));
    if (std::isnan(f)) continue;
    REQUIRE(float_to_float16_bits(f) == bits);
  }
}

TEST_CASE("dtype - float to integer truncates toward zero") {
  auto i32 = convert_values<std::int32_t>(std::vector<float>{2.7f, -2.7f, 0.5f, -0.0f, 100.0f},
                                          DType::float32, DType::int32);
  CHECK(i32 == std::vector<std::int32_t>{2, -2, 0, 0, 100});
  auto i64 = convert_values<std::int64_t>(std::vector<double>{-1e10 - 0.9, 3.99}, DType::float64, DType::int64);
  CHECK(i64 == std::vector<std::int64_t>{-10000000000, 3});
  // Negative floats reach uint8 through int64, as c10 does: -1 becomes 255.
  auto u8 = convert_values<std::uint8_t>(std::vector<float>{-1.0f, 255.9f, 7.5f}, DType::float32, DType::uint8);
  CHECK(u8 == std::vector<std::uint8_t>{255, 255, 7});
  // NaN (undefined in PyTorch) is defined here: 0.
  auto nan = convert_values<std::int32_t>(std::vector<float>{std::nanf("")}, DType::float32, DType::int32);
  CHECK(nan[0] == 0);
}

TEST_CASE("dtype - to bool is value != 0, bool to a number is 0 or 1") {
  auto from_float = convert_values<std::uint8_t>(
      std::vector<float>{0.0f, -0.0f, 0.1f, -3.0f, std::nanf("")}, DType::float32, DType::boolean);
  CHECK(from_float == std::vector<std::uint8_t>{0, 0, 1, 1, 1});
  auto from_int = convert_values<std::uint8_t>(std::vector<std::int64_t>{0, 5, -3}, DType::int64, DType::boolean);
  CHECK(from_int == std::vector<std::uint8_t>{0, 1, 1});
  // Any nonzero byte reads as true.
  auto to_float = convert_values<float>(std::vector<std::uint8_t>{0, 1, 7}, DType::boolean, DType::float32);
  CHECK(to_float == std::vector<float>{0.0f, 1.0f, 1.0f});
  auto to_int = convert_values<std::int64_t>(std::vector<std::uint8_t>{1, 0}, DType::boolean, DType::int64);
  CHECK(to_int == std::vector<std::int64_t>{1, 0});
}

TEST_CASE("dtype - float to float conversions round once, from the source") {
  auto bf16 = convert_values<std::uint16_t>(std::vector<float>{1.0f, std::bit_cast<float>(0x3F818000u)},
                                            DType::float32, DType::bfloat16);
  CHECK(bf16 == std::vector<std::uint16_t>{0x3F80, 0x3F82});
  auto back = convert_values<float>(bf16, DType::bfloat16, DType::float32);
  CHECK(back == std::vector<float>{1.0f, bfloat16_bits_to_float(0x3F82)});
  auto f16 = convert_values<std::uint16_t>(std::vector<double>{65504.0, 1e6, -0.5}, DType::float64, DType::float16);
  CHECK(f16 == std::vector<std::uint16_t>{0x7BFF, 0x7C00, 0xB800});
  auto f64 = convert_values<double>(std::vector<float>{0.1f}, DType::float32, DType::float64);
  CHECK(f64[0] == static_cast<double>(0.1f));
  // bfloat16 -> float16 goes through the exact float value.
  auto cross = convert_values<std::uint16_t>(std::vector<std::uint16_t>{0x3F80, 0xC000}, DType::bfloat16,
                                             DType::float16);
  CHECK(cross == std::vector<std::uint16_t>{0x3C00, 0xC000});
}

TEST_CASE("dtype - integers convert exactly, wrap when narrowed, round once to float") {
  auto i32 = convert_values<std::int32_t>(std::vector<std::int64_t>{(std::int64_t{1} << 32) + 5, -1},
                                          DType::int64, DType::int32);
  CHECK(i32 == std::vector<std::int32_t>{5, -1});
  auto u8 = convert_values<std::uint8_t>(std::vector<std::int32_t>{256 + 3, -2}, DType::int32, DType::uint8);
  CHECK(u8 == std::vector<std::uint8_t>{3, 254});
  // 2^60 + 2^36 + 1 rounds up to 2^60 + 2^37 in float; through double it would tie to 2^60.
  const std::int64_t big = (std::int64_t{1} << 60) + (std::int64_t{1} << 36) + 1;
  auto f32 = convert_values<float>(std::vector<std::int64_t>{big}, DType::int64, DType::float32);
  CHECK(f32[0] == std::ldexp(1.0f, 60) + std::ldexp(1.0f, 37));
  auto f64 = convert_values<double>(std::vector<std::uint8_t>{200}, DType::uint8, DType::float64);
  CHECK(f64[0] == 200.0);
}

TEST_CASE("dtype - same dtype copies the bytes, NaN payloads included") {
  std::vector<std::uint32_t> in{0x7FC01234u, 0x3F800000u};
  auto out = convert_values<std::uint32_t>(in, DType::float32, DType::float32);
  CHECK(out == in);
  // Zero elements touch nothing, even with empty spans.
  convert({}, DType::float32, {}, DType::int64, 0);
}
