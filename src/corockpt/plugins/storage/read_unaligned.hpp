#pragma once
/// @file
/// `read_unaligned_at`: `Storage::read_at` for any offset, length and memory, on direct
/// files too (which take only aligned transfers): small reads such as headers, size
/// probes and verification pieces. Bulk reads align themselves and skip the bounce.

#include <cstddef>
#include <cstdint>
#include <span>

#include "corockpt/plugins/storage/storage.hpp"

namespace corockpt {

/// Reads into `data` at `offset` until it is full or the file ends, through an aligned
/// bounce buffer of its own (the aligned superset of the range) when `file` is direct.
/// @returns the number of bytes read (less than `data.size()` only at end of file);
/// Errc::no_memory if the bounce buffer cannot be allocated.
Task<std::size_t> read_unaligned_at(Storage& storage, File& file, std::uint64_t offset, std::span<std::byte> data);

}  // namespace corockpt
