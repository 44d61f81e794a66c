#include "corockpt/ckpt/detail/request_capture.hpp"

#include <cstring>
#include <string>

namespace corockpt::detail {

namespace {

// Each copy starts on a cache line: any dtype's alignment, and no false sharing with
// the next one while the snapshot's workers read them.
constexpr std::size_t copy_alignment = 64;

std::size_t aligned(std::size_t at) { return (at + copy_alignment - 1) / copy_alignment * copy_alignment; }

}  // namespace

Result<RequestCapture> RequestCapture::take(Runtime& runtime, std::span<const LocalChunk> chunks, Device* device) {
  RequestCapture out;
  std::size_t size = 0;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    const LocalChunk& chunk = chunks[i];
    if (!chunk.at_request || !chunk.writer || chunk.bytes.empty()) continue;
    if (chunk.space != MemorySpace::host && (!device || device->space() != chunk.space)) {
      return fail(Errc::invalid_argument,
                  chunk.name + " lies in " + std::string(to_string(chunk.space)) +
                      " memory: capturing it when the save is requested needs that device "
                      "(AsyncCheckpointerOptions::device)",
                  {.fqn = chunk.name, .operation = "async_save"});
    }
    size = aligned(size);
    out.captured_.emplace_back(i, size);
    size += chunk.bytes.size();
    out.bytes_ += chunk.bytes.size();
  }
  if (out.captured_.empty()) return out;
  out.memory_.resize(size);

  std::vector<CopyPiece> from_device;
  for (const auto& [index, at] : out.captured_) {
    const LocalChunk& chunk = chunks[index];
    std::byte* to = out.memory_.data() + at;
    if (chunk.space == MemorySpace::host) {
      std::memcpy(to, chunk.bytes.data(), chunk.bytes.size());
    } else {
      from_device.push_back({.to = to, .from = chunk.bytes.data(), .bytes = chunk.bytes.size()});
    }
  }
  if (from_device.empty()) return out;
  // Small (buffers), so waited for here: the caller may change the memory once we return.
  auto copied = runtime.spawn(device->copy(CopyDirection::to_host, from_device)).get();
  if (!copied) {
    // A copy past its deadline may still land later (Device::copy): its destination is
    // never freed.
    if (copied.error().code == Errc::timeout) (void)new std::vector<std::byte>(std::move(out.memory_));
    return fail(std::move(copied.error()));
  }
  return out;
}

std::span<const LocalChunk> RequestCapture::substitute(std::span<const LocalChunk> chunks) {
  if (captured_.empty()) return chunks;
  if (substituted_.empty()) {
    substituted_.assign(chunks.begin(), chunks.end());
    for (const auto& [index, at] : captured_) {
      LocalChunk& chunk = substituted_[index];
      chunk.bytes = {memory_.data() + at, chunk.bytes.size()};
      chunk.space = MemorySpace::host;
    }
  }
  return substituted_;
}

}  // namespace corockpt::detail
