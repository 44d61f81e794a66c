#include "corockpt/ckpt/detail/copy_batch.hpp"

#include <cstring>
#include <utility>

namespace corockpt::detail {

void CopyBatch::add(std::byte* to, MemorySpace to_space, const std::byte* from, MemorySpace from_space,
                    std::size_t bytes) {
  if (bytes == 0) return;
  const CopyPiece piece{to, from, bytes};
  const bool to_device = to_space != MemorySpace::host;
  const bool from_device = from_space != MemorySpace::host;
  if (!to_device && !from_device) {
    on_host_.push_back(piece);
  } else if (!to_device) {
    to_host_.push_back(piece);
  } else if (!from_device) {
    to_device_.push_back(piece);
  } else {
    within_device_.push_back(piece);
  }
}

namespace {

// One direction's pieces as one Device::copy.
Task<void> copy_all(Device* device, CopyDirection direction, std::span<const CopyPiece> pieces) {
  if (pieces.empty()) co_return Result<void>{};
  if (device == nullptr) {
    co_return fail(Errc::invalid_argument,
                   std::string(to_string(direction)) + ": device memory to copy, and no device to copy it with");
  }
  co_return co_await device->copy(direction, pieces);
}

}  // namespace

Task<void> CopyBatch::run() {
  for (const CopyPiece& piece : on_host_) std::memcpy(piece.to, piece.from, piece.bytes);
  on_host_.clear();
  // Named locals of the frame, not a loop over an array of them: GCC 12 frees a coroutine's
  // range-for temporaries early (ASan caught it).
  const std::vector<CopyPiece> to_host = std::exchange(to_host_, {});
  const std::vector<CopyPiece> to_device = std::exchange(to_device_, {});
  const std::vector<CopyPiece> within_device = std::exchange(within_device_, {});
  if (auto ok = co_await copy_all(device_, CopyDirection::to_host, to_host); !ok) co_return ok;
  if (auto ok = co_await copy_all(device_, CopyDirection::to_device, to_device); !ok) co_return ok;
  co_return co_await copy_all(device_, CopyDirection::within_device, within_device);
}

Result<Scratch> Scratch::make(Device* device, MemorySpace space, std::size_t bytes) {
  Scratch scratch;
  scratch.size_ = bytes;
  scratch.space_ = space;
  if (bytes == 0) return scratch;
  if (space == MemorySpace::host) {
    scratch.host_.resize(bytes);
    return scratch;
  }
  if (device == nullptr || device->space() != space) {
    return fail(Errc::invalid_argument, "no device of " + std::string(to_string(space)) + " memory for a gather buffer");
  }
  auto memory = device->allocate(bytes);
  if (!memory) return fail(std::move(memory.error()));
  scratch.device_ = std::move(*memory);
  return scratch;
}

}  // namespace corockpt::detail
