#include "corockpt/ckpt/dtype.hpp"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "corockpt/ckpt/detail/expects.hpp"

namespace corockpt {

namespace {

struct DTypeNames {
  DType dtype;
  std::string_view torch;
  std::string_view safetensors;
};

constexpr DTypeNames kNames[] = {
    {DType::float32, "float32", "F32"}, {DType::bfloat16, "bfloat16", "BF16"},
    {DType::float16, "float16", "F16"}, {DType::float64, "float64", "F64"},
    {DType::int64, "int64", "I64"},     {DType::int32, "int32", "I32"},
    {DType::uint8, "uint8", "U8"},      {DType::boolean, "bool", "BOOL"},
};

const DTypeNames& names_of(DType dtype) {
  for (const auto& n : kNames) {
    if (n.dtype == dtype) return n;
  }
  return kNames[0];  // unreachable for a valid enumerator
}

std::string known_names(std::string_view DTypeNames::*field) {
  std::string out;
  for (const auto& n : kNames) {
    if (!out.empty()) out += ", ";
    out += n.*field;
  }
  return out;
}

Result<DType> parse_by(std::string_view name, std::string_view DTypeNames::*field,
                       std::string_view what) {
  for (const auto& n : kNames) {
    if (n.*field == name) return n.dtype;
  }
  return fail(Errc::invalid_argument, "unknown " + std::string(what) + " \"" + std::string(name) +
                                          "\" (known: " + known_names(field) + ")");
}

// Elements are read and written with memcpy: buffers need not be aligned.
template <class T>
T load_raw(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class T>
void store_raw(std::byte* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

// PyTorch leaves NaN and out-of-range float-to-int casts undefined; saturating keeps
// ours defined (and free of UB) without changing any in-range result.
std::int64_t truncate_to_int64(double v) {
  if (std::isnan(v)) return 0;
  constexpr double two_63 = 9223372036854775808.0;
  if (v >= two_63) return std::numeric_limits<std::int64_t>::max();
  if (v < -two_63) return std::numeric_limits<std::int64_t>::min();
  return static_cast<std::int64_t>(v);  // truncates toward zero
}

// A codec reads one element as the widest value of its kind (double for floating
// types, int64 for integers and bool) and writes one from either kind. Keeping integer
// sources as int64 matters: int64 -> float32 must round once, not via double.
struct Float32Codec {
  static constexpr std::size_t size = 4;
  static double load(const std::byte* p) { return load_raw<float>(p); }
  static void store(std::byte* p, double v) { store_raw(p, static_cast<float>(v)); }
  static void store(std::byte* p, std::int64_t v) { store_raw(p, static_cast<float>(v)); }
};

struct Float64Codec {
  static constexpr std::size_t size = 8;
  static double load(const std::byte* p) { return load_raw<double>(p); }
  static void store(std::byte* p, double v) { store_raw(p, v); }
  static void store(std::byte* p, std::int64_t v) { store_raw(p, static_cast<double>(v)); }
};

// The 16-bit types round from float32, as c10's BFloat16(float) and Half(float) do.
template <std::uint16_t (*to_bits)(float), float (*from_bits)(std::uint16_t)>
struct Half16Codec {
  static constexpr std::size_t size = 2;
  static double load(const std::byte* p) { return from_bits(load_raw<std::uint16_t>(p)); }
  static void store(std::byte* p, double v) { store_raw(p, to_bits(static_cast<float>(v))); }
  static void store(std::byte* p, std::int64_t v) { store_raw(p, to_bits(static_cast<float>(v))); }
};
using BFloat16Codec = Half16Codec<float_to_bfloat16_bits, bfloat16_bits_to_float>;
using Float16Codec = Half16Codec<float_to_float16_bits, float16_bits_to_float>;

template <class T>
struct IntegerCodec {
  static constexpr std::size_t size = sizeof(T);
  static std::int64_t load(const std::byte* p) { return load_raw<T>(p); }
  static void store(std::byte* p, double v) { store_raw(p, static_cast<T>(truncate_to_int64(v))); }
  static void store(std::byte* p, std::int64_t v) { store_raw(p, static_cast<T>(v)); }  // wraps
};

struct BoolCodec {
  static constexpr std::size_t size = 1;
  static std::int64_t load(const std::byte* p) { return load_raw<std::uint8_t>(p) != 0 ? 1 : 0; }
  static void store(std::byte* p, double v) { store_raw<std::uint8_t>(p, v != 0.0 ? 1 : 0); }
  static void store(std::byte* p, std::int64_t v) { store_raw<std::uint8_t>(p, v != 0 ? 1 : 0); }
};

// Calls f with the codec of `dtype`, so each (from, to) pair gets its own tight loop.
template <class F>
void with_codec(DType dtype, F&& f) {
  switch (dtype) {
    case DType::float32: f(Float32Codec{}); return;
    case DType::bfloat16: f(BFloat16Codec{}); return;
    case DType::float16: f(Float16Codec{}); return;
    case DType::float64: f(Float64Codec{}); return;
    case DType::int64: f(IntegerCodec<std::int64_t>{}); return;
    case DType::int32: f(IntegerCodec<std::int32_t>{}); return;
    case DType::uint8: f(IntegerCodec<std::uint8_t>{}); return;
    case DType::boolean: f(BoolCodec{}); return;
  }
}

}  // namespace

std::size_t size_of(DType dtype) {
  switch (dtype) {
    case DType::float32: return 4;
    case DType::bfloat16: return 2;
    case DType::float16: return 2;
    case DType::float64: return 8;
    case DType::int64: return 8;
    case DType::int32: return 4;
    case DType::uint8: return 1;
    case DType::boolean: return 1;
  }
  return 0;
}

std::string_view to_string(DType dtype) { return names_of(dtype).torch; }

Result<DType> parse_dtype(std::string_view name) {
  return parse_by(name, &DTypeNames::torch, "dtype");
}

std::string_view safetensors_name(DType dtype) { return names_of(dtype).safetensors; }

Result<DType> parse_safetensors_dtype(std::string_view name) {
  return parse_by(name, &DTypeNames::safetensors, "safetensors dtype");
}

bool is_floating_point(DType dtype) {
  return dtype == DType::float32 || dtype == DType::bfloat16 || dtype == DType::float16 ||
         dtype == DType::float64;
}

std::uint16_t float_to_bfloat16_bits(float value) {
  if (std::isnan(value)) return 0x7FC0;  // the quiet NaN c10 produces
  const auto bits = std::bit_cast<std::uint32_t>(value);
  // Round to nearest even: add just under half an ulp, plus one if the kept lsb is odd.
  const std::uint32_t bias = 0x7FFF + ((bits >> 16) & 1);
  return static_cast<std::uint16_t>((bits + bias) >> 16);
}

float bfloat16_bits_to_float(std::uint16_t bits) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

std::uint16_t float_to_float16_bits(float value) {
  const auto bits = std::bit_cast<std::uint32_t>(value);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000);
  const std::uint32_t magnitude = bits & 0x7FFFFFFF;

  if (magnitude > 0x7F800000) return sign | 0x7E00;   // NaN
  if (magnitude >= 0x477FF000) return sign | 0x7C00;  // >= 65520 rounds to infinity
  if (magnitude <= 0x33000000) return sign;           // <= 2^-25 rounds to zero

  // Round `mantissa >> shift` to nearest, ties to even.
  auto round_shift = [](std::uint32_t mantissa, unsigned shift) {
    const std::uint32_t kept = mantissa >> shift;
    const std::uint32_t rest = mantissa & ((1u << shift) - 1);
    const std::uint32_t half = 1u << (shift - 1);
    return kept + ((rest > half || (rest == half && (kept & 1))) ? 1 : 0);
  };

  if (magnitude < 0x38800000) {
    // Below float16's smallest normal (2^-14): a subnormal in units of 2^-24. A carry
    // out of the mantissa lands on the smallest normal, which is the right encoding.
    const unsigned exponent = magnitude >> 23;
    const std::uint32_t mantissa = (magnitude & 0x7FFFFF) | 0x800000;
    return sign | static_cast<std::uint16_t>(round_shift(mantissa, 126 - exponent));
  }
  // Normal: rebias the exponent (127 -> 15) and drop 13 mantissa bits. A carry into
  // the exponent is again the right encoding.
  return sign | static_cast<std::uint16_t>(round_shift(magnitude - 0x38000000, 13));
}

float float16_bits_to_float(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000) << 16;
  const std::uint32_t exponent = (bits >> 10) & 0x1F;
  const std::uint32_t mantissa = bits & 0x3FF;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1F) return std::bit_cast<float>(sign | 0x7F800000 | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

void convert(std::span<const std::byte> src, DType from, std::span<std::byte> dst, DType to,
             std::size_t count) {
  detail::expects(src.size() / size_of(from) >= count, "convert: source smaller than count");
  detail::expects(dst.size() / size_of(to) >= count, "convert: destination smaller than count");
  if (count == 0) return;
  if (from == to) {
    std::memcpy(dst.data(), src.data(), count * size_of(from));
    return;
  }
  with_codec(from, [&](auto src_codec) {
    with_codec(to, [&](auto dst_codec) {
      using Src = decltype(src_codec);
      using Dst = decltype(dst_codec);
      const std::byte* in = src.data();
      std::byte* out = dst.data();
      for (std::size_t i = 0; i < count; ++i) {
        Dst::store(out + i * Dst::size, Src::load(in + i * Src::size));
      }
    });
  });
}

}  // namespace corockpt
