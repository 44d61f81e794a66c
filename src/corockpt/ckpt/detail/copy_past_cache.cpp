#include "corockpt/ckpt/detail/copy_past_cache.hpp"

#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace corockpt::detail {

namespace {

constexpr std::size_t streaming_from = 64 << 10;

}  // namespace

void copy_past_cache(std::byte* to, const std::byte* from, std::size_t bytes) {
#if defined(__SSE2__)
  if (bytes >= streaming_from) {
    // Up to the destination's first 16-byte boundary, then 64 bytes a step, then the rest.
    const std::size_t head = (16 - reinterpret_cast<std::uintptr_t>(to) % 16) % 16;
    std::memcpy(to, from, head);
    to += head;
    from += head;
    bytes -= head;
    auto* out = reinterpret_cast<__m128i*>(to);
    const auto* in = reinterpret_cast<const __m128i*>(from);
    const std::size_t steps = bytes / 64;
    for (std::size_t i = 0; i < steps; ++i, out += 4, in += 4) {
      const __m128i a = _mm_loadu_si128(in), b = _mm_loadu_si128(in + 1);
      const __m128i c = _mm_loadu_si128(in + 2), d = _mm_loadu_si128(in + 3);
      _mm_stream_si128(out, a);
      _mm_stream_si128(out + 1, b);
      _mm_stream_si128(out + 2, c);
      _mm_stream_si128(out + 3, d);
    }
    _mm_sfence();  // the streaming stores are ordered before whatever follows
    std::memcpy(to + steps * 64, from + steps * 64, bytes - steps * 64);
    return;
  }
#endif
  std::memcpy(to, from, bytes);
}

}  // namespace corockpt::detail
