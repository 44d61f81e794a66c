#pragma once
/// @file
/// `copy_past_cache`: memcpy for bulk copies whose destination is not read again soon
/// (a load filling a model): above 64 KiB it writes with non-temporal stores where the
/// CPU has them (x86-64's SSE2), so the destination's cache lines are not first read
/// from memory only to be overwritten. That halves the memory traffic of the copy, the
/// largest CPU cost of a load after the checksums. Elsewhere, and below 64 KiB, memcpy.

#include <cstddef>

namespace corockpt::detail {

void copy_past_cache(std::byte* to, const std::byte* from, std::size_t bytes);

}  // namespace corockpt::detail
