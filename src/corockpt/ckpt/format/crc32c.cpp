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

}  // namespace corockpt
