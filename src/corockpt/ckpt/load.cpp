#include "corockpt/ckpt/load.hpp"

#include <algorithm>
#include <memory>

#include "corockpt/ckpt/checkpoint_reader.hpp"
#include "corockpt/ckpt/detail/shard_rows.hpp"
#include "corockpt/runtime/when_all.hpp"

namespace corockpt {

namespace {

using detail::bytes_of;
using detail::shape_text;

// Saved rows read at once, at most (a chunk's overlap is read in slabs of rows).
constexpr std::uint64_t max_read_bytes = 64ull << 20;

// One read: rows [row_begin, row_end) of a saved chunk, into a target chunk.
struct ReadJob {
  LocalChunk* target;
  const std::string* name;
  const TensorRecord* record;
  const ChunkRecord* saved;
  std::int64_t row_begin;
  std::int64_t row_end;
  std::uint64_t row_bytes;
};

// The jobs filling `target` from `record`'s chunks: each overlap's rows, in slabs.
void plan_reads(LocalChunk& target, const std::string& name, const TensorRecord& record, std::vector<ReadJob>& jobs) {
  for (const auto& saved : record.chunks) {
    const Box overlap = intersect(target.box, saved.box);
    if (overlap.empty()) continue;
    if (saved.box.ndim() == 0) {  // a scalar: the whole chunk
      jobs.push_back({&target, &name, &record, &saved, 0, 1, bytes_of(1, record.dtype)});
      continue;
    }
    std::vector<std::int64_t> row_shape(saved.box.sizes.begin() + 1, saved.box.sizes.end());
    const std::uint64_t row_bytes = bytes_of(corockpt::numel(row_shape), record.dtype);
    const std::int64_t first = overlap.offsets[0] - saved.box.offsets[0];
    const std::int64_t last = first + overlap.sizes[0];
    const std::int64_t slab = std::max<std::int64_t>(1, static_cast<std::int64_t>(max_read_bytes / std::max<std::uint64_t>(row_bytes, 1)));
    for (std::int64_t row = first; row < last; row += slab) {
      jobs.push_back({&target, &name, &record, &saved, row, std::min(last, row + slab), row_bytes});
    }
  }
}

struct Queue {
  std::vector<ReadJob> jobs;
  std::size_t next = 0;
  bool failed = false;
  std::uint64_t done = 0;
  std::uint64_t total = 0;
};

// One of `concurrency` loops: read the next slab, check it, copy it into place.
Task<void> run_reads(CheckpointIo io, CheckpointReader& reader, Queue& queue, const LoadOptions& options) {
  while (queue.next < queue.jobs.size() && !queue.failed) {
    const ReadJob job = queue.jobs[queue.next++];
    auto bytes = co_await reader.read(*job.name, *job.saved, job.row_begin * job.row_bytes, job.row_end * job.row_bytes);
    if (!bytes) {
      queue.failed = true;
      co_return fail(bytes.error());
    }
    const std::vector<std::byte>* src = &*bytes;
    const ReadJob* what = &job;
    auto copied = co_await io.runtime->offload([src, what] {
      Box slab = what->saved->box;
      if (slab.ndim() > 0) {
        slab.offsets[0] += what->row_begin;
        slab.sizes[0] = what->row_end - what->row_begin;
      }
      LocalChunk& target = *what->target;
      if (what->record->dtype == target.dtype) {
        copy_overlap(slab, *src, target.box, target.bytes, size_of(target.dtype));
        return;
      }
      std::vector<std::byte> converted(bytes_of(slab.numel(), target.dtype));
      convert(*src, what->record->dtype, converted, target.dtype, static_cast<std::size_t>(slab.numel()));
      copy_overlap(slab, converted, target.box, target.bytes, size_of(target.dtype));
    });
    if (!copied) co_return fail(copied.error());
    queue.done += bytes->size();
    if (options.progress) options.progress(queue.done, queue.total);
  }
  co_return Result<void>{};
}

}  // namespace

namespace {

bool on_device(const LocalChunk& chunk) { return !chunk.bytes.empty() && chunk.space != MemorySpace::host; }

// Chunks in device memory are loaded into host copies of them, then copied back: the
// copies start as the device's bytes, so what the load leaves alone (not strict) stays.
Task<LoadReport> load_through_host(CheckpointReader& reader, std::span<LocalChunk> chunks, CheckpointIo io,
                                   LoadOptions options) {
  std::shared_ptr<Device> device = std::move(options.device);
  std::vector<LocalChunk> mirror(chunks.begin(), chunks.end());
  std::vector<std::vector<std::byte>> memory;
  std::vector<Task<void>> copies;
  for (auto& chunk : mirror) {
    if (!on_device(chunk)) continue;
    if (device->space() != chunk.space) {
      co_return fail(Errc::invalid_argument,
                     chunk.name + " lies in " + std::string(to_string(chunk.space)) + " memory, the load's device is " +
                         std::string(to_string(device->space())),
                     {.fqn = chunk.name, .operation = "load"});
    }
    std::span<std::byte> host = memory.emplace_back(chunk.bytes.size());
    copies.push_back(device->copy_to_host(host, chunk.bytes));
    chunk.bytes = host;
    chunk.space = MemorySpace::host;
  }
  if (auto ok = all_ok(co_await when_all(std::move(copies))); !ok) co_return fail(ok.error());
  copies.clear();
  auto report = co_await load_from(reader, mirror, io, std::move(options));
  if (!report) co_return fail(report.error());
  // Host chunks (steps among them) were loaded in place: the mirror shares their memory.
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    if (on_device(chunks[i])) copies.push_back(device->copy_to_device(chunks[i].bytes, mirror[i].bytes));
  }
  if (auto ok = all_ok(co_await when_all(std::move(copies))); !ok) co_return fail(ok.error());
  co_return report;
}

}  // namespace

Task<LoadReport> load_chunks(std::span<LocalChunk> chunks, CheckpointIo io, std::string dir, LoadOptions options) {
  auto reader = co_await CheckpointReader::open(io, std::move(dir));
  if (!reader) co_return fail(reader.error());
  if (options.device && std::ranges::any_of(chunks, on_device)) {
    co_return co_await load_through_host(**reader, chunks, io, std::move(options));
  }
  co_return co_await load_from(**reader, chunks, io, std::move(options));
}

Task<LoadReport> load_from(CheckpointReader& reader, std::span<LocalChunk> chunks, CheckpointIo io,
                           LoadOptions options) {
  const CheckpointMetadata& metadata = reader.metadata();
  LoadReport report{.saved_world_size = metadata.world_size, .user = metadata.user};

  for (const auto& target : chunks) {
    if (on_device(target)) {
      co_return fail(Errc::invalid_argument,
                     target.name + " lies in " + std::string(to_string(target.space)) +
                         " memory: load it with LoadOptions::device",
                     {.fqn = target.name, .path = reader.dir(), .operation = "load"});
    }
  }
  Queue queue;
  std::set<std::string> files;
  std::set<std::string> checked;  // tensors whose tiling is known good
  for (auto& target : chunks) {
    auto it = metadata.tensors.find(target.name);
    if (it == metadata.tensors.end()) {
      if (options.strict) {
        co_return fail(Errc::not_found, "the checkpoint has no " + target.name,
                       {.fqn = target.name, .path = reader.dir(), .operation = "load"});
      }
      if (report.missing.empty() || report.missing.back() != target.name) report.missing.push_back(target.name);
      continue;
    }
    const TensorRecord& record = it->second;
    if (record.shape != target.shape) {
      if (options.strict) {
        co_return fail(Errc::invalid_argument,
                       target.name + " has shape " + shape_text(record.shape) + " in the checkpoint but " +
                           shape_text(target.shape) + " in the model",
                       {.fqn = target.name, .path = reader.dir(), .operation = "load"});
      }
      if (report.mismatched.empty() || report.mismatched.back() != target.name) report.mismatched.push_back(target.name);
      continue;
    }
    // A gap would leave model values silently stale: the chunks must tile the tensor.
    if (checked.insert(target.name).second) {
      if (auto ok = check_tiling(target.name, record); !ok) co_return fail(ok.error().with_path(reader.dir()));
    }
    const std::size_t before = queue.jobs.size();
    plan_reads(target, it->first, record, queue.jobs);
    for (std::size_t j = before; j < queue.jobs.size(); ++j) {
      files.insert(queue.jobs[j].saved->file);
      queue.total += (queue.jobs[j].row_end - queue.jobs[j].row_begin) * queue.jobs[j].row_bytes;
    }
    report.elements += target.box.numel();
  }
  if (auto ok = co_await reader.open_files(std::move(files)); !ok) co_return fail(ok.error());
  std::vector<Task<void>> readers;
  for (int w = 0; w < std::max(1, options.concurrency); ++w) readers.push_back(run_reads(io, reader, queue, options));
  if (auto ok = all_ok(co_await when_all(std::move(readers))); !ok) co_return fail(ok.error());
  report.bytes_read = queue.done;
  co_return report;
}

Task<LoadReport> load_checkpoint(Model& model, CheckpointIo io, std::string dir) {
  return load_checkpoint(model, io, std::move(dir), LoadOptions{});
}

Task<LoadReport> load_checkpoint(Model& model, CheckpointIo io, std::string dir, LoadOptions options) {
  auto chunks = LocalChunks::of(model);
  if (!chunks) co_return fail(chunks.error().with_rank(model.rank()));
  if (!options.device) options.device = model.device();
  auto report = co_await load_chunks(chunks->chunks(), io, std::move(dir), std::move(options));
  if (!report) co_return fail(report.error().with_rank(model.rank()));
  chunks->store_steps();
  co_return report;
}

}  // namespace corockpt
