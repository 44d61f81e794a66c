#include "corockpt/ckpt/load.hpp"

#include <algorithm>
#include <memory>
#include <set>

#include "corockpt/ckpt/checkpoint_reader.hpp"
#include "corockpt/ckpt/detail/read_plan.hpp"
#include "corockpt/ckpt/detail/replica_reads.hpp"
#include "corockpt/ckpt/detail/shard_rows.hpp"
#include "corockpt/ckpt/detail/staged_reads.hpp"
#include "corockpt/runtime/when_all.hpp"

namespace corockpt {

namespace {

// Device chunks are loaded through host memory in rounds of at most this many bytes
// (the constant a device load adds to the staging budget).
constexpr std::uint64_t device_round_bytes = 64ull << 20;

bool on_device(const LocalChunk& chunk) { return !chunk.bytes.empty() && chunk.space != MemorySpace::host; }

// A piece of a device chunk, loaded into host memory and then copied to `device_bytes`.
struct DevicePiece {
  LocalChunk host;
  std::span<std::byte> device_bytes;
};

void merge_names(std::vector<std::string>& into, const std::vector<std::string>& names) {
  for (const auto& name : names) {
    if (std::ranges::find(into, name) == into.end()) into.push_back(name);
  }
}

// Loads `pieces` (host chunks in `memory`) and copies them to their device memory.
Task<void> load_round(CheckpointReader& reader, std::vector<DevicePiece>& pieces, CheckpointIo io, Device& device,
                      const LoadOptions& options, LoadReport& report) {
  std::vector<LocalChunk> hosts;
  for (const auto& piece : pieces) hosts.push_back(piece.host);
  LoadOptions round = options;
  round.device = nullptr;
  auto loaded = co_await load_from(reader, hosts, io, std::move(round));
  if (!loaded) co_return fail(loaded.error());
  merge_names(report.missing, loaded->missing);
  merge_names(report.mismatched, loaded->mismatched);
  report.bytes_read += loaded->bytes_read;
  report.elements += loaded->elements;
  std::vector<Task<void>> copies;
  for (const auto& piece : pieces) {
    // What the load left alone (not strict) keeps the device's values.
    const std::string& name = piece.host.name;
    if (std::ranges::find(loaded->missing, name) != loaded->missing.end()) continue;
    if (std::ranges::find(loaded->mismatched, name) != loaded->mismatched.end()) continue;
    copies.push_back(device.copy_to_device(piece.device_bytes, piece.host.bytes));
  }
  if (auto ok = all_ok(co_await when_all(std::move(copies))); !ok) co_return fail(ok.error());
  pieces.clear();
  co_return Result<void>{};
}

// Chunks in device memory are loaded into host memory a round at a time (each piece a
// box that is contiguous in its chunk), then copied to the device: a load needs host
// memory for one round, not for the model. Every loaded element is written (the saved
// chunks tile each tensor), so the host copies need not start as the device's bytes.
Task<LoadReport> load_through_host(CheckpointReader& reader, std::span<LocalChunk> chunks, CheckpointIo io,
                                   LoadOptions options) {
  std::shared_ptr<Device> device = std::move(options.device);
  std::vector<LocalChunk> on_host;
  for (const auto& chunk : chunks) {
    if (!on_device(chunk)) {
      on_host.push_back(chunk);
    } else if (device->space() != chunk.space) {
      co_return fail(Errc::invalid_argument,
                     chunk.name + " lies in " + std::string(to_string(chunk.space)) + " memory, the load's device is " +
                         std::string(to_string(device->space())),
                     {.fqn = chunk.name, .operation = "load"});
    }
  }
  // Host chunks (steps among them) load in place.
  auto report = co_await load_from(reader, on_host, io, options);
  if (!report) co_return fail(report.error());

  std::uint64_t largest = 0;
  for (const auto& chunk : chunks) {
    if (on_device(chunk)) largest = std::max<std::uint64_t>(largest, chunk.bytes.size());
  }
  std::vector<std::byte> memory(std::min(largest, device_round_bytes));
  std::vector<DevicePiece> pieces;
  std::uint64_t used = 0;
  for (const auto& chunk : chunks) {
    if (!on_device(chunk)) continue;
    const std::uint64_t elem = size_of(chunk.dtype);
    const std::int64_t total = chunk.box.numel();
    std::int64_t at = 0;
    while (at < total) {
      auto take = static_cast<std::int64_t>(std::min<std::uint64_t>((memory.size() - used) / elem,
                                                                    static_cast<std::uint64_t>(total - at)));
      if (take == 0) {
        if (auto ok = co_await load_round(reader, pieces, io, *device, options, *report); !ok) co_return fail(ok.error());
        used = 0;
        continue;
      }
      std::int64_t element = at;
      for (Box box : flat_range_boxes(chunk.box.sizes, at, at + take)) {
        const std::uint64_t bytes = static_cast<std::uint64_t>(box.numel()) * elem;
        for (std::size_t d = 0; d < box.offsets.size(); ++d) box.offsets[d] += chunk.box.offsets[d];
        LocalChunk host = chunk;
        host.box = box;
        host.bytes = std::span(memory).subspan(used, bytes);
        host.space = MemorySpace::host;
        pieces.push_back({std::move(host), chunk.bytes.subspan(static_cast<std::uint64_t>(element) * elem, bytes)});
        used += bytes;
        element += box.numel();
      }
      at += take;
    }
  }
  if (auto ok = co_await load_round(reader, pieces, io, *device, options, *report); !ok) co_return fail(ok.error());
  co_return report;
}

// Every chunk read on this rank: device chunks through host memory, host ones in place.
Task<LoadReport> load_here(CheckpointReader& reader, std::span<LocalChunk> chunks, CheckpointIo io,
                           LoadOptions options) {
  if (options.device && std::ranges::any_of(chunks, on_device)) {
    co_return co_await load_through_host(reader, chunks, io, std::move(options));
  }
  co_return co_await load_from(reader, chunks, io, std::move(options));
}

// Replicated chunks read by one rank of their group each and passed on to the others.
Task<LoadReport> load_with_replicas(CheckpointReader& reader, std::span<LocalChunk> chunks, CheckpointIo io,
                                    LoadOptions options) {
  std::shared_ptr<Communicator> comm = std::move(options.replicas);
  // Only chunks the load will fill (in the checkpoint, same shape) and the communicator moves.
  std::vector<bool> eligible(chunks.size());
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    const auto it = reader.metadata().tensors.find(chunks[i].name);
    eligible[i] = it != reader.metadata().tensors.end() && it->second.shape == chunks[i].shape &&
                  !chunks[i].bytes.empty() && chunks[i].space == comm->memory_space();
  }
  auto plan = co_await detail::plan_replica_reads(*comm, chunks, eligible);
  if (!plan) co_return fail(plan.error());
  std::vector<LocalChunk> mine;
  std::int64_t passed_elements = 0;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    if (plan->read_here[i]) {
      mine.push_back(chunks[i]);
    } else {
      passed_elements += chunks[i].box.numel();
    }
  }
  auto report = co_await load_here(reader, mine, io, std::move(options));
  // Whether every rank read its part, before any waits for bytes that will not come.
  const std::uint8_t failed = report ? 0 : 1;
  std::vector<std::uint8_t> failures(static_cast<std::size_t>(comm->size()));
  const auto failed_bytes = std::as_bytes(std::span(&failed, 1));
  if (auto ok = co_await comm->all_gather(failed_bytes, std::as_writable_bytes(std::span(failures))); !ok) {
    co_return fail(report ? ok.error() : report.error());
  }
  if (!report) co_return fail(report.error());
  for (std::size_t r = 0; r < failures.size(); ++r) {
    if (failures[r]) {
      co_return fail(Errc::io, "rank " + std::to_string(r) + " of " + comm->name() +
                                   " failed to read its share of the replicated chunks (its error says why)",
                     {.path = reader.dir(), .operation = "load"});
    }
  }
  if (auto ok = co_await detail::pass_replicas(*comm, chunks, *plan); !ok) co_return fail(ok.error());
  report->elements += passed_elements;
  co_return report;
}

}  // namespace

Task<LoadReport> load_chunks(std::span<LocalChunk> chunks, CheckpointIo io, std::string dir, LoadOptions options) {
  auto reader = co_await CheckpointReader::open_for(io, std::move(dir), chunks);
  if (!reader) co_return fail(reader.error());
  if (options.replicas) co_return co_await load_with_replicas(**reader, chunks, io, std::move(options));
  co_return co_await load_here(**reader, chunks, io, std::move(options));
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
  if (!io.staging) {
    co_return fail(Errc::invalid_argument, "a load reads through staging buffers: CheckpointIo::staging is null",
                   {.path = reader.dir(), .operation = "load"});
  }
  auto found = detail::find_read_needs(metadata, chunks, options.strict, reader.dir());
  if (!found) co_return fail(found.error());
  report.missing = std::move(found->missing);
  report.mismatched = std::move(found->mismatched);
  report.elements = found->elements;
  std::vector<detail::ReadNeed> needs = std::move(found->needs);
  std::set<std::string> files = std::move(found->files);
  if (auto ok = co_await reader.open_files(std::move(files)); !ok) co_return fail(ok.error());
  const std::vector<detail::PlannedRead> reads = detail::plan_reads(needs, detail::read_limits(reader, *io.staging));
  detail::StagedReadOptions staged{.concurrency = options.concurrency, .progress = options.progress};
  auto read = co_await detail::run_staged_reads(reader, reads, io, std::move(staged));
  if (!read) co_return fail(read.error());
  report.bytes_read = *read;
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
