#pragma once
/// @file
/// CRC-32C (Castagnoli), the checksum of every block of checkpoint data (ISA-L's
/// `crc32_iscsi`, hardware-accelerated). The standard value: "123456789" -> 0xE3069283.

#include <cstddef>
#include <cstdint>
#include <span>

namespace corockpt {

/// The CRC-32C of all of `data` (0 for an empty span). One call per block: there is no
/// running state between calls, so equal bytes always give equal values.
std::uint32_t crc32c(std::span<const std::byte> data);

/// The CRC-32C of A followed by B, from `crc_a` = crc32c(A), `crc_b` = crc32c(B) and B's
/// length: for checksums of blocks whose bytes arrive in pieces, in any order (a block
/// of device memory staged through several buffers). O(log length_b).
std::uint32_t crc32c_combine(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t length_b);

}  // namespace corockpt
