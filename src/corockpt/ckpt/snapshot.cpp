#include "corockpt/ckpt/snapshot.hpp"

#include <algorithm>
#include <cstring>

#include "corockpt/ckpt/data_file_layout.hpp"
#include "corockpt/ckpt/data_file_writer.hpp"
#include "corockpt/runtime/when_all.hpp"

namespace corockpt {

namespace {

constexpr std::uint64_t copy_piece = 16ull << 20;

std::uint64_t padded_image(std::uint64_t bytes) {
  return (bytes + file_image_alignment - 1) / file_image_alignment * file_image_alignment;
}

std::uint64_t images_bytes(const std::vector<DataFileLayout>& files) {
  std::uint64_t total = 0;
  for (const auto& file : files) total += padded_image(file.size);
  return total;
}

struct Piece {
  const std::byte* from;
  std::byte* to;
  std::size_t bytes;
};

Task<void> copy_pieces(Runtime& runtime, std::vector<Piece> pieces) {
  // A named lambda: GCC 12 destroys non-trivial captures of a temporary twice here.
  auto copy = [list = std::move(pieces)] {
    for (const Piece& p : list) std::memcpy(p.to, p.from, p.bytes);
  };
  auto copied = co_await runtime.offload(std::move(copy));
  if (!copied) co_return fail(copied.error());
  co_return Result<void>{};
}

// Runs one unit's copies, then tells `on_unit` (if any) that the unit is in staging.
Task<void> copy_unit(std::vector<Task<void>> jobs, std::uint32_t unit, std::function<void(std::uint32_t)> on_unit) {
  auto copied = all_ok(co_await when_all(std::move(jobs)));
  if (!copied) co_return fail(copied.error());
  if (on_unit) on_unit(unit);
  co_return Result<void>{};
}

}  // namespace

std::uint64_t Snapshot::bytes_needed(std::span<const LocalChunk> chunks, int rank) {
  return images_bytes(layout_data_files(chunks, rank));
}

Result<std::unique_ptr<Snapshot>> Snapshot::create(std::span<const LocalChunk> chunks, int rank,
                                                   std::shared_ptr<BufferAllocator> allocator) {
  const std::vector<DataFileLayout> files = layout_data_files(chunks, rank);
  std::unique_ptr<Snapshot> snapshot(new Snapshot());
  snapshot->allocator_ = std::move(allocator);
  snapshot->bytes_ = images_bytes(files);
  if (snapshot->bytes_ > 0) {
    auto memory = snapshot->allocator_->allocate(snapshot->bytes_, file_image_alignment);
    if (!memory) return fail(memory.error());
    snapshot->memory_ = *memory;
    // Touched now (and the pads zeroed for good), so the first snapshot does not pay
    // the page faults inside the training loop's fence.
    std::memset(snapshot->memory_, 0, snapshot->bytes_);
  }
  snapshot->chunks_.assign(chunks.begin(), chunks.end());
  for (LocalChunk& chunk : snapshot->chunks_) {
    chunk.step_of = nullptr;  // the snapshot's step is a value, not the live param's
    chunk.bytes = {};         // listed only, unless a file holds it
    chunk.space = MemorySpace::host;
  }
  std::byte* image = snapshot->memory_;
  for (const DataFileLayout& file : files) {
    std::memcpy(image, file.header.data(), file.header.size());
    std::uint64_t at = file.header.size();
    for (std::size_t i : file.chunks) {
      snapshot->chunks_[i].bytes = {image + at, chunks[i].bytes.size()};
      at += chunks[i].bytes.size();
    }
    snapshot->file_images_.emplace_back(image, padded_image(file.size));
    image += padded_image(file.size);
  }
  return snapshot;
}

Snapshot::~Snapshot() {
  if (memory_) allocator_->deallocate(memory_, bytes_);
}

Task<void> Snapshot::take(Runtime& runtime, std::span<const LocalChunk> live, Device* device, bool ordered,
                          std::span<const std::uint32_t> order, std::function<void(std::uint32_t)> on_unit) {
  // Each unit's chunks, in `order` (as listed when it is empty).
  std::vector<std::uint32_t> units(order.begin(), order.end());
  std::uint32_t unit_count = 0;
  for (const auto& chunk : live) unit_count = std::max(unit_count, chunk.unit + 1);
  // Every unit is copied: one `order` leaves out (chunks given with other units than the
  // checkpointer's) comes last rather than not at all.
  std::vector<bool> listed(unit_count, false);
  for (std::uint32_t u : units) {
    if (u < unit_count) listed[u] = true;
  }
  for (std::uint32_t u = 0; u < unit_count; ++u) {
    if (!listed[u]) units.push_back(u);
  }
  std::vector<std::vector<std::size_t>> chunks_of(unit_count);
  for (std::size_t i = 0; i < live.size(); ++i) chunks_of[live[i].unit].push_back(i);

  // Device chunks: checked, and the device ordered after its compute, before any copy.
  for (std::size_t i = 0; i < live.size(); ++i) {
    if (chunks_[i].bytes.empty() || live[i].space == MemorySpace::host) continue;
    if (!device || device->space() != live[i].space) {
      co_return fail(Errc::invalid_argument,
                     live[i].name + " lies in " + std::string(to_string(live[i].space)) +
                         " memory: the snapshot needs that device (AsyncCheckpointerOptions::device)",
                     {.fqn = live[i].name, .operation = "snapshot"});
    }
    if (!ordered) {
      if (auto ok = device->order_after_compute(); !ok) co_return fail(ok.error());
      ordered = true;
    }
  }
  // Each unit's copies: its host pieces grouped into about one job per worker, so every
  // core copies it, and its device chunks through the device. One unit at a time: its fence opens as early as the cores allow, and ranks
  // that share the workers (in-process ranks) interleave unit by unit instead of the
  // first rank's whole state going before the last rank's first unit.
  for (std::uint32_t unit : units) {
    if (unit >= unit_count) continue;
    std::vector<Task<void>> jobs;
    std::uint64_t total = 0;
    for (std::size_t i : chunks_of[unit]) {
      if (chunks_[i].bytes.empty()) continue;  // in no file
      if (live[i].space != MemorySpace::host) {
        jobs.push_back(device->copy_to_host(chunks_[i].bytes, live[i].bytes));
      } else {
        total += chunks_[i].bytes.size();
      }
    }
    const std::uint64_t per_job =
        std::max<std::uint64_t>(copy_piece, total / std::max<std::size_t>(runtime.worker_count(), 1) + 1);
    std::vector<Piece> job;
    std::uint64_t in_job = 0;
    for (std::size_t i : chunks_of[unit]) {
      if (chunks_[i].bytes.empty() || live[i].space != MemorySpace::host) continue;
      const std::span<std::byte> from = live[i].bytes;
      for (std::uint64_t at = 0; at < from.size(); at += copy_piece) {
        const std::size_t n = std::min<std::uint64_t>(copy_piece, from.size() - at);
        job.push_back({from.data() + at, chunks_[i].bytes.data() + at, n});
        in_job += n;
        if (in_job >= per_job) {
          jobs.push_back(copy_pieces(runtime, std::move(job)));
          job.clear();
          in_job = 0;
        }
      }
    }
    if (!job.empty()) jobs.push_back(copy_pieces(runtime, std::move(job)));
    Task<void> copying = copy_unit(std::move(jobs), unit, on_unit);  // named: GCC 12 and temporaries in co_await
    if (auto copied = co_await std::move(copying); !copied) co_return fail(copied.error());
  }
  co_return Result<void>{};
}

}  // namespace corockpt
