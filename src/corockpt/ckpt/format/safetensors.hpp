#pragma once
/// @file
/// The safetensors layout of checkpoint data files: an 8-byte little-endian header
/// length N, N bytes of JSON (padded with trailing spaces so the data starts at a
/// multiple of 8), then the tensors' bytes packed with no holes. The JSON maps each
/// tensor name to {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}
/// (offsets relative to the first data byte) and optionally "__metadata__" to a map of
/// strings. See https://github.com/huggingface/safetensors (format description).

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "corockpt/ckpt/dtype.hpp"
#include "corockpt/runtime/error.hpp"

namespace corockpt {

/// The largest header this reader accepts (safetensors' own limit is 100 MB).
inline constexpr std::uint64_t max_safetensors_header_bytes = 100'000'000;

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::float32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;  ///< relative to the first data byte
  std::uint64_t end = 0;

  friend bool operator==(const SafetensorsEntry&, const SafetensorsEntry&) = default;
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;       ///< in data order (ascending begin)
  std::map<std::string, std::string> metadata;  ///< "__metadata__"
  std::uint64_t data_offset = 0;               ///< 8 + N: where the data starts in the file
  std::uint64_t data_bytes = 0;                ///< the largest `end` (0 without entries)
};

/// The first 8 + N bytes of a file holding `entries`, in the order given (each entry's
/// begin/end must already pack them: the first at 0, each next at the previous end).
/// "__metadata__" comes first, and only when `metadata` is not empty. Names are UTF-8
/// (bytes that are not are written as U+FFFD).
/// Preconditions (checked; a violation aborts, it is a caller's bug): entries packed,
/// byte sizes match dtype and shape, names unique and not "__metadata__".
std::string encode_safetensors_header(const std::vector<SafetensorsEntry>& entries,
                                      const std::map<std::string, std::string>& metadata);

/// The header length N from a file's first 8 bytes. @returns Errc::corrupt when fewer
/// than 8 bytes are given, N exceeds max_safetensors_header_bytes or 8 + N exceeds
/// `file_size`.
Result<std::uint64_t> parse_safetensors_header_length(std::span<const std::byte> first8, std::uint64_t file_size);

/// Parses the N header bytes (JSON, possibly space-padded) of a file of `file_size` bytes.
/// Checks, each an Errc::corrupt error saying what is wrong and naming the tensor: JSON
/// syntax; the shape of every entry (object with exactly dtype, shape, data_offsets);
/// known dtype (Errc::corrupt naming it); non-negative shape; begin <= end; end - begin
/// equal to the bytes of dtype x shape; data within the file (data_offset + end <=
/// file_size); no two entries overlapping and no hole between them (packed from 0);
/// `__metadata__` a map of strings; no key repeated in an object (a second tensor of one
/// name); JSON nested at most 128 deep (detail::max_json_depth). Bytes after the last tensor
/// are allowed. Never reads outside `json`.
Result<SafetensorsHeader> parse_safetensors_header(std::span<const std::byte> json, std::uint64_t file_size);

}  // namespace corockpt
