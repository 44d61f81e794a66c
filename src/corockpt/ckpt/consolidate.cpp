#include "corockpt/ckpt/consolidate.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>

#include "corockpt/ckpt/checkpoint_reader.hpp"
#include "corockpt/ckpt/detail/directory_commit.hpp"
#include "corockpt/ckpt/detail/shard_rows.hpp"
#include "corockpt/ckpt/format/safetensors.hpp"
#include "corockpt/ckpt/load.hpp"
#include "corockpt/runtime/aligned_memory.hpp"
#include "corockpt/runtime/when_all.hpp"

namespace corockpt {

namespace {

struct OutputFile {
  std::string name;
  std::vector<SafetensorsEntry> entries;  ///< named as in the output
  std::vector<std::string> sources;       ///< each entry's name in the checkpoint
  std::uint64_t data_bytes = 0;
};

// save_pretrained's sharding: fill a file up to the limit, a big tensor alone.
std::vector<OutputFile> plan_files(const CheckpointMetadata& metadata, const ConsolidateOptions& options) {
  std::vector<OutputFile> files;
  for (const auto& [name, record] : metadata.tensors) {
    if (!options.optimizer_states && name.starts_with("state.")) continue;
    if (!name.starts_with(options.strip_prefix)) continue;
    const std::uint64_t bytes = detail::bytes_of(corockpt::numel(record.shape), record.dtype);
    if (files.empty() || (files.back().data_bytes > 0 && files.back().data_bytes + bytes > options.max_file_bytes)) {
      files.emplace_back();
    }
    OutputFile& file = files.back();
    file.entries.push_back({name.substr(options.strip_prefix.size()), record.dtype, record.shape, file.data_bytes,
                            file.data_bytes + bytes});
    file.sources.push_back(name);
    file.data_bytes += bytes;
  }
  for (std::size_t i = 0; i < files.size(); ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, files.size());
    files[i].name = name;
  }
  return files;
}

// An output file is written a window at a time (ConsolidateOptions::window_bytes): one
// window is filled from the checkpoint (through the load's staged reads) while the one
// before it is written, O_DIRECT where the file system takes it. Memory: two windows,
// whatever the model's size.
constexpr std::uint64_t write_piece_bytes = 4ull << 20;  // the writes of a window in flight at once
// Room before and after a window for an element that a window edge cuts: it is loaded
// whole and only the window's part of it written (a page, so the window stays aligned).
constexpr std::uint64_t edge_room = 4096;

// The output file's bytes [begin, end) into `window`: the header's and, loaded from the
// checkpoint, the tensors' (each as boxes contiguous in it).
Task<void> fill_window(CheckpointReader& reader, CheckpointIo io, const OutputFile& plan, const std::string& header,
                       std::uint64_t begin, std::uint64_t end, std::byte* window) {
  if (begin < header.size()) {
    std::memcpy(window, header.data() + begin, std::min<std::uint64_t>(header.size(), end) - begin);
  }
  std::vector<LocalChunk> targets;
  for (std::size_t i = 0; i < plan.entries.size(); ++i) {
    const SafetensorsEntry& entry = plan.entries[i];
    const std::uint64_t first = header.size() + entry.begin, last = header.size() + entry.end;
    if (last <= begin || first >= end) continue;
    const std::uint64_t elem = size_of(entry.dtype);
    const std::uint64_t from = (std::max(first, begin) - first) / elem;
    const std::uint64_t to = (std::min(last, end) - first + elem - 1) / elem;
    std::byte* at = window + first + from * elem - begin;  // up to an element before the window
    for (const Box& box :
         flat_range_boxes(entry.shape, static_cast<std::int64_t>(from), static_cast<std::int64_t>(to))) {
      const std::size_t bytes = static_cast<std::size_t>(box.numel()) * elem;
      targets.push_back(LocalChunk{
          .name = plan.sources[i], .dtype = entry.dtype, .shape = entry.shape, .box = box, .bytes = {at, bytes}});
      at += bytes;
    }
  }
  LoadOptions options;  // named, as every non-trivial argument of a call awaited here (GCC 12)
  if (auto loaded = co_await load_from(reader, targets, io, std::move(options)); !loaded)
    co_return fail(loaded.error());
  co_return Result<void>{};
}

// Bytes [begin, begin + length) of `file` from `data`, in pieces written at once; the
// length rounded up to the file's alignment (the file is truncated to its size after).
Task<void> write_window(CheckpointIo io, File& file, std::uint64_t begin, std::uint64_t length, const std::byte* data) {
  const std::uint64_t align = std::max<std::uint32_t>(file.offset_alignment(), 1);
  length = (length + align - 1) / align * align;
  std::vector<Task<void>> writes;
  for (std::uint64_t at = 0; at < length; at += write_piece_bytes) {
    const std::span<const std::byte> piece(data + at, std::min(write_piece_bytes, length - at));
    writes.push_back(io.storage->write_at(file, begin + at, piece));
  }
  co_return all_ok(co_await when_all(std::move(writes)));
}

// One output file: the header, then the full tensors read from the checkpoint, a window
// at a time, the next window filled while the last is written.
Task<std::uint64_t> write_file(CheckpointIo io, CheckpointReader& reader, std::string path, const OutputFile& plan,
                               std::uint64_t window_bytes, const std::function<void(std::uint64_t)>& on_bytes) {
  auto file = co_await io.storage->open(path, {.mode = OpenMode::create, .direct = DirectIo::prefer});
  if (!file) co_return fail(file.error());
  const std::string header = encode_safetensors_header(plan.entries, {{"format", "pt"}});
  const std::uint64_t size = header.size() + plan.data_bytes;
  if (auto ok = co_await io.storage->allocate(*file, size); !ok) co_return fail(ok.error());
  // Each window with a page of room before and after it.
  const AlignedMemory first(window_bytes + 2 * edge_room, edge_room), second(window_bytes + 2 * edge_room, edge_room);
  if (!first || !second) {
    co_return fail(Errc::no_memory, "no memory for two windows of " + std::to_string(window_bytes) + " bytes",
                   {.path = path, .operation = "consolidate"});
  }
  std::byte* const windows[2] = {first.data() + edge_room, second.data() + edge_room};
  const std::uint64_t count = (size + window_bytes - 1) / window_bytes;
  if (auto ok = co_await fill_window(reader, io, plan, header, 0, std::min(size, window_bytes), windows[0]);
      !ok) {
    co_return fail(ok.error());
  }
  for (std::uint64_t k = 0; k < count; ++k) {
    const std::uint64_t begin = k * window_bytes, end = std::min(size, begin + window_bytes);
    std::vector<Task<void>> both;
    both.push_back(write_window(io, *file, begin, end - begin, windows[k % 2]));
    if (k + 1 < count) {
      both.push_back(
          fill_window(reader, io, plan, header, end, std::min(size, end + window_bytes), windows[(k + 1) % 2]));
    }
    if (auto ok = all_ok(co_await when_all(std::move(both))); !ok) co_return fail(ok.error());
    on_bytes(end - std::max<std::uint64_t>(begin, std::min<std::uint64_t>(header.size(), end)));
  }
  if (auto ok = co_await io.storage->truncate(*file, size); !ok) co_return fail(ok.error());
  if (auto ok = co_await io.storage->fsync(*file); !ok) co_return fail(ok.error());
  co_return size;
}

}  // namespace

Task<ConsolidateReport> consolidate_checkpoint(CheckpointIo io, std::string dir, std::string out,
                                               ConsolidateOptions options) {
  if (options.window_bytes == 0 || options.window_bytes % edge_room != 0) {
    co_return fail(Errc::invalid_argument,
                   "ConsolidateOptions::window_bytes must be a positive multiple of 4096, not " +
                       std::to_string(options.window_bytes),
                   {.path = out, .operation = "consolidate"});
  }
  auto reader = co_await CheckpointReader::open(io, std::move(dir));
  if (!reader) co_return fail(reader.error());
  const std::vector<OutputFile> files = plan_files((*reader)->metadata(), options);
  ConsolidateReport report{.files = files.size()};
  nlohmann::json weight_map = nlohmann::json::object();
  for (const auto& file : files) {
    report.bytes += file.data_bytes;
    report.tensors += file.entries.size();
    for (const auto& entry : file.entries) weight_map[entry.name] = file.name;
  }

  out = detail::strip_trailing_slashes(std::move(out));
  auto tmp = co_await detail::make_temporary_directory(io, out);
  if (!tmp) co_return fail(tmp.error());
  std::uint64_t done = 0;
  std::function<void(std::uint64_t)> on_bytes = [&done, &report, &options](std::uint64_t bytes) {
    done += bytes;
    if (options.progress) options.progress(done, report.bytes);
  };
  Result<void> written;
  for (const auto& file : files) {
    auto ok = co_await write_file(io, **reader, tmp->path + "/" + file.name, file, options.window_bytes, on_bytes);
    if (!ok) {
      written = fail(ok.error());
      break;
    }
  }
  if (written) {
    const nlohmann::json index = {{"metadata", {{"total_size", report.bytes}}}, {"weight_map", weight_map}};
    written =
        co_await detail::write_durable_file(io, tmp->path + "/model.safetensors.index.json", index.dump(2) + "\n");
  }
  if (written) written = co_await detail::commit_directory(io, tmp->path, out);
  if (!written) {
    (void)co_await detail::remove_directory(io, tmp->path);
    co_return fail(written.error());
  }
  co_return report;
}

}  // namespace corockpt
