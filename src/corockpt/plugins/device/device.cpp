#include "corockpt/plugins/device/device.hpp"

#include <string>

namespace corockpt {

std::string_view to_string(MemorySpace space) {
  switch (space) {
    case MemorySpace::host: return "host";
    case MemorySpace::cuda: return "cuda";
  }
  return "unknown";
}

std::string_view to_string(CopyDirection direction) {
  switch (direction) {
    case CopyDirection::to_host: return "copy_to_host";
    case CopyDirection::to_device: return "copy_to_device";
    case CopyDirection::within_device: return "copy_within_device";
  }
  return "copy";
}

Task<void> Device::copy_one(CopyDirection direction, std::span<std::byte> to, std::span<const std::byte> from) {
  if (to.size() != from.size()) {
    const std::string operation(to_string(direction));
    co_return fail(Errc::invalid_argument,
                   operation + " on " + name() + ": copies " + std::to_string(from.size()) + " bytes into " +
                       std::to_string(to.size()),
                   {.operation = operation});
  }
  const CopyPiece piece{to.data(), from.data(), to.size()};
  co_return co_await copy(direction, std::span<const CopyPiece>(&piece, 1));
}

}  // namespace corockpt
