#pragma once
/// @file
/// `DType`: the element types a checkpoint holds, their sizes, their names (PyTorch's and
/// safetensors'), and element conversion with the semantics of PyTorch's `copy_`.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "corockpt/runtime/error.hpp"

namespace corockpt {

enum class DType { float32, bfloat16, float16, float64, int64, int32, uint8, boolean };

/// Bytes per element (bool takes one byte, as in PyTorch).
std::size_t size_of(DType dtype);

/// PyTorch's name without the `torch.` prefix: "float32", "bfloat16", ..., "bool".
std::string_view to_string(DType dtype);

/// The inverse of `to_string`. @returns Errc::invalid_argument naming the unknown name.
Result<DType> parse_dtype(std::string_view name);

/// The safetensors header name: "F32", "BF16", "F16", "F64", "I64", "I32", "U8", "BOOL".
std::string_view safetensors_name(DType dtype);

/// The inverse of `safetensors_name`. @returns Errc::invalid_argument naming the unknown name.
Result<DType> parse_safetensors_dtype(std::string_view name);

/// True for float32, bfloat16, float16 and float64.
bool is_floating_point(DType dtype);

/// Converts `count` elements of type `from` in `src` into elements of type `to` in `dst`,
/// as PyTorch's `dst.copy_(src)` does:
/// - float to float rounds to nearest, ties to even (bfloat16 and float16 from float32;
///   float64 to a 16-bit type goes through float32, as c10 does); NaN stays NaN,
///   overflow becomes infinity;
/// - float to integer truncates toward zero. Where PyTorch is undefined (NaN, out of
///   range) this saturates to int64 (NaN gives 0) and then wraps to the target width;
/// - integer to narrower integer wraps (two's complement), as a C++ cast does;
/// - to bool: value != 0 (NaN is true); bool to number: 0 or 1;
/// - same dtype: a plain byte copy.
/// Preconditions (checked; a violation aborts, it is a caller's bug): `src` holds at
/// least `count * size_of(from)` bytes and `dst` at least `count * size_of(to)`.
void convert(std::span<const std::byte> src, DType from, std::span<std::byte> dst, DType to,
             std::size_t count);

/// Scalar helpers for one element, used by `convert` and handy in tests.
std::uint16_t float_to_bfloat16_bits(float value);
float bfloat16_bits_to_float(std::uint16_t bits);
std::uint16_t float_to_float16_bits(float value);
float float16_bits_to_float(std::uint16_t bits);

}  // namespace corockpt
