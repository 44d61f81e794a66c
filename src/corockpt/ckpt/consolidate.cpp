#include "corockpt/ckpt/consolidate.hpp"

#include <cstdio>

#include <nlohmann/json.hpp>

#include "corockpt/ckpt/checkpoint_reader.hpp"
#include "corockpt/ckpt/detail/directory_commit.hpp"
#include "corockpt/ckpt/detail/shard_rows.hpp"
#include "corockpt/ckpt/format/safetensors.hpp"
#include "corockpt/ckpt/load.hpp"

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
    file.entries.push_back(
        {name.substr(options.strip_prefix.size()), record.dtype, record.shape, file.data_bytes, file.data_bytes + bytes});
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

// One output file: the header, then each full tensor read from the checkpoint.
Task<std::uint64_t> write_file(CheckpointIo io, CheckpointReader& reader, std::string path, const OutputFile& plan,
                               const std::function<void(std::uint64_t)>& on_tensor) {
  auto file = co_await io.storage->open(path, {.mode = OpenMode::create, .direct = DirectIo::never});
  if (!file) co_return fail(file.error());
  const std::string header = encode_safetensors_header(plan.entries, {{"format", "pt"}});
  if (auto ok = co_await io.storage->write_at(*file, 0, std::as_bytes(std::span(header))); !ok) co_return fail(ok.error());
  for (std::size_t i = 0; i < plan.entries.size(); ++i) {
    const SafetensorsEntry& entry = plan.entries[i];
    std::vector<std::byte> full(entry.end - entry.begin);
    LocalChunk whole{.name = plan.sources[i], .dtype = entry.dtype, .shape = entry.shape, .box = whole_box(entry.shape),
                     .bytes = full};
    LoadOptions options;  // named, as every non-trivial argument of a call awaited here (GCC 12)
    if (auto loaded = co_await load_from(reader, std::span(&whole, 1), io, std::move(options)); !loaded) {
      co_return fail(loaded.error());
    }
    if (auto ok = co_await io.storage->write_at(*file, header.size() + entry.begin, full); !ok) co_return fail(ok.error());
    on_tensor(full.size());
  }
  if (auto ok = co_await io.storage->fsync(*file); !ok) co_return fail(ok.error());
  co_return header.size() + plan.data_bytes;
}

}  // namespace

Task<ConsolidateReport> consolidate_checkpoint(CheckpointIo io, std::string dir, std::string out,
                                               ConsolidateOptions options) {
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
  std::function<void(std::uint64_t)> on_tensor = [&done, &report, &options](std::uint64_t bytes) {
    done += bytes;
    if (options.progress) options.progress(done, report.bytes);
  };
  Result<void> written;
  for (const auto& file : files) {
    auto ok = co_await write_file(io, **reader, *tmp + "/" + file.name, file, on_tensor);
    if (!ok) {
      written = fail(ok.error());
      break;
    }
  }
  if (written) {
    const nlohmann::json index = {{"metadata", {{"total_size", report.bytes}}}, {"weight_map", weight_map}};
    written = co_await detail::write_durable_file(io, *tmp + "/model.safetensors.index.json", index.dump(2) + "\n");
  }
  if (written) written = co_await detail::commit_directory(io, *tmp, out);
  if (!written) {
    (void)co_await detail::remove_directory(io, *tmp);
    co_return fail(written.error());
  }
  co_return report;
}

}  // namespace corockpt
