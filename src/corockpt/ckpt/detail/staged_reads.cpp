#include "corockpt/ckpt/detail/staged_reads.hpp"

#include <algorithm>

#include "corockpt/ckpt/box.hpp"
#include "corockpt/ckpt/format/crc32c.hpp"
#include "corockpt/runtime/aligned_memory.hpp"
#include "corockpt/runtime/when_all.hpp"

namespace corockpt::detail {

namespace {

std::uint64_t round_up(std::uint64_t n, std::uint64_t to) { return (n + to - 1) / to * to; }

// A checksum block that does not match.
struct BadBlock {
  const ReadSegment* segment = nullptr;
  std::uint64_t block = 0;
};

// Elements [first, last) of `segment`'s chunk, at `source`, copied (or converted) into the
// parts of the segment's targets they cover.
void copy_elements(const ReadSegment& segment, const std::byte* source, std::int64_t first, std::int64_t last) {
  const ChunkRecord& saved = *segment.saved;
  const DType dtype = segment.record->dtype;
  const std::uint64_t elem = size_of(dtype);
  // The elements as boxes of the chunk, each contiguous in the source.
  for (Box box : flat_range_boxes(saved.box.sizes, first, last)) {
    const std::size_t bytes = static_cast<std::size_t>(box.numel()) * elem;
    for (std::size_t d = 0; d < box.offsets.size(); ++d) box.offsets[d] += saved.box.offsets[d];
    for (LocalChunk* target : segment.targets) {
      convert_overlap(box, {source, bytes}, dtype, target->box, target->bytes, target->dtype);
    }
    source += bytes;
  }
}

// Copies are batched to at least this many bytes (blocks can be as small as 4 bytes):
// still in the cache that verifying them filled.
constexpr std::uint64_t copy_batch_bytes = 256 << 10;

// Verifies each checksum block of `read` (whose first byte is at `data`) and copies the
// elements it completes right after, while they are in cache. Stops at the first block
// that does not match: the elements before it are copied (verified), none after.
BadBlock verify_and_copy(const PlannedRead& read, const std::byte* data, std::uint64_t block) {
  for (const ReadSegment& segment : read.segments) {
    const ChunkRecord& saved = *segment.saved;
    const std::uint64_t length = saved.end - saved.begin;
    const std::uint64_t elem = size_of(segment.record->dtype);
    const std::byte* base = data + (saved.begin + segment.from - read.begin);  // the chunk's byte segment.from
    std::uint64_t copied = segment.from;  // chunk bytes copied so far (whole elements)
    for (std::uint64_t k = segment.from / block; k * block < segment.to; ++k) {
      const std::uint64_t at = k * block;
      const std::uint64_t size = std::min(block, length - at);
      if (crc32c({base + (at - segment.from), size}) != saved.crc32c[k]) return {&segment, k};
      const std::uint64_t verified = std::min(at + size, segment.to) / elem * elem;
      if (verified - copied >= copy_batch_bytes || verified == segment.to) {
        copy_elements(segment, base + (copied - segment.from), static_cast<std::int64_t>(copied / elem),
                      static_cast<std::int64_t>(verified / elem));
        copied = verified;
      }
    }
  }
  return {};
}

struct Shared {
  std::span<const PlannedRead> reads;
  std::size_t next = 0;
  bool failed = false;
  std::uint64_t done = 0;
  std::uint64_t total = 0;
};

// One read into `memory` (aligned for its file, room for the aligned superset), checked
// and copied on a worker.
Task<void> read_one(CheckpointReader& reader, CheckpointIo io, const PlannedRead& read, std::span<std::byte> memory) {
  File* file = reader.file(*read.file);
  if (!file) co_return fail(Errc::internal, "data file not opened before reading", {.path = *read.file});
  const std::uint64_t align = std::max<std::uint32_t>(file->offset_alignment(), 1);
  const std::uint64_t from = read.begin - read.begin % align;
  const std::uint64_t length = round_up(read.end, align) - from;
  auto got = co_await io.storage->read_at(*file, from, memory.first(length));
  if (!got) co_return fail(got.error().with_fqn(*read.segments.front().name));
  if (from + *got < read.end) {  // the short read at the file's end came too early
    const std::uint64_t size = from + *got;
    const ReadSegment* cut = &read.segments.front();
    for (const ReadSegment& segment : read.segments) {
      if (segment.saved->begin + segment.to > size) {
        cut = &segment;
        break;
      }
    }
    co_return fail(Errc::corrupt,
                   "the data file ends at byte " + std::to_string(size) + ", before " + *cut->name +
                       "'s chunk does (byte " + std::to_string(cut->saved->end) + ")",
                   {.fqn = *cut->name, .path = file->path(), .operation = "read"});
  }
  const std::byte* data = memory.data() + (read.begin - from);
  const PlannedRead* what = &read;
  const std::uint64_t block = reader.metadata().block_size;
  auto bad = co_await io.runtime->offload([what, data, block] { return verify_and_copy(*what, data, block); });
  if (!bad) co_return fail(bad.error());
  if (bad->segment) {
    const ChunkRecord& saved = *bad->segment->saved;
    const std::string& name = *bad->segment->name;
    co_return fail(Errc::corrupt,
                   "checksum mismatch in " + name + "'s chunk " + saved.box.to_string() + ", block " +
                       std::to_string(bad->block) + " (bytes " + std::to_string(saved.begin + bad->block * block) +
                       ".." + std::to_string(std::min(saved.end, saved.begin + (bad->block + 1) * block)) + ")",
                   {.fqn = name, .path = file->path(), .operation = "read"});
  }
  co_return Result<void>{};
}

void count(Shared& shared, const PlannedRead& read, const StagedReadOptions& options) {
  shared.done += read.end - read.begin;
  if (options.progress) options.progress(shared.done, shared.total);
}

// One of several loops: a buffer, the next read into it, repeat.
Task<void> read_loop(CheckpointReader& reader, CheckpointIo io, Shared& shared, const StagedReadOptions& options) {
  while (shared.next < shared.reads.size() && !shared.failed) {
    auto buffer = co_await io.staging->acquire();
    if (!buffer) co_return fail(buffer.error());
    if (shared.next >= shared.reads.size() || shared.failed) break;
    const PlannedRead& read = shared.reads[shared.next++];
    if (read.oversized) continue;  // read_oversized reads it
    auto ok = co_await read_one(reader, io, read, buffer->bytes());
    if (!ok) {
      shared.failed = true;
      co_return fail(ok.error());
    }
    count(shared, read, options);
  }
  co_return Result<void>{};
}

// Reads longer than a buffer, one at a time, each in an allocation of its own.
Task<void> read_oversized(CheckpointReader& reader, CheckpointIo io, Shared& shared, const StagedReadOptions& options) {
  for (const PlannedRead& read : shared.reads) {
    if (!read.oversized || shared.failed) continue;
    const File* file = reader.file(*read.file);
    const std::uint64_t align =
        std::max<std::uint64_t>({file ? file->offset_alignment() : 1u, io.staging->alignment(), 4096});
    const std::uint64_t size = round_up(read.end - read.begin + 2 * align, align);
    AlignedMemory memory(size, align);
    if (!memory) {
      co_return fail(Errc::no_memory, "no memory for a read of " + std::to_string(size) + " bytes (one checksum block)",
                     {.path = *read.file, .operation = "read"});
    }
    auto ok = co_await read_one(reader, io, read, memory.span());
    if (!ok) {
      shared.failed = true;
      co_return fail(ok.error());
    }
    count(shared, read, options);
  }
  co_return Result<void>{};
}

}  // namespace

ReadPlanLimits read_limits(CheckpointReader& reader, const BufferPool& staging) {
  std::uint64_t align = 1;
  for (const auto& [name, file] : reader.files()) align = std::max<std::uint64_t>(align, file.offset_alignment());
  const std::uint64_t buffer = staging.buffer_bytes();
  // An aligned superset is at most 2 alignments longer than its range.
  return {.block_size = reader.metadata().block_size, .max_read = buffer > 2 * align ? buffer - 2 * align : 1};
}

Task<std::uint64_t> run_staged_reads(CheckpointReader& reader, std::span<const PlannedRead> reads, CheckpointIo io,
                                     StagedReadOptions options) {
  Shared shared{.reads = reads};
  for (const PlannedRead& read : reads) shared.total += read.end - read.begin;
  const std::size_t loops =
      std::min<std::size_t>(reads.size(), static_cast<std::size_t>(std::max(1, options.concurrency)));
  std::vector<Task<void>> loops_running;
  for (std::size_t i = 0; i < loops; ++i) loops_running.push_back(read_loop(reader, io, shared, options));
  if (auto ok = all_ok(co_await when_all(std::move(loops_running))); !ok) co_return fail(ok.error());
  if (auto ok = co_await read_oversized(reader, io, shared, options); !ok) co_return fail(ok.error());
  co_return shared.done;
}

}  // namespace corockpt::detail
