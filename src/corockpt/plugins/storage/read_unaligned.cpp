#include "corockpt/plugins/storage/read_unaligned.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "corockpt/runtime/aligned_memory.hpp"

namespace corockpt {

Task<std::size_t> read_unaligned_at(Storage& storage, File& file, std::uint64_t offset, std::span<std::byte> data) {
  if (data.empty()) co_return std::size_t{0};
  if (!file.direct()) co_return co_await storage.read_at(file, offset, data);
  const std::uint64_t align = std::max<std::uint64_t>({file.offset_alignment(), file.memory_alignment(), 1});
  const std::uint64_t start = offset / align * align;
  const std::uint64_t end = (offset + data.size() + align - 1) / align * align;
  const std::uint64_t length = end - start;
  AlignedMemory bounce(length, align);
  if (!bounce) {
    co_return fail(Errc::no_memory, "no memory for a " + std::to_string(length) + " byte read",
                   {.path = file.path(), .operation = "read_at"});
  }
  auto got = co_await storage.read_at(file, start, bounce.span().first(length));
  if (!got) co_return fail(got.error());
  const std::uint64_t skip = offset - start;
  const std::size_t available = *got > skip ? std::min<std::size_t>(*got - skip, data.size()) : 0;
  std::memcpy(data.data(), bounce.data() + skip, available);
  co_return available;
}

}  // namespace corockpt
