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

}  // namespace corockpt
