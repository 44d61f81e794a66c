#include "corockpt/ckpt/verify.hpp"

#include <deque>
#include <limits>
#include <map>
#include <set>

#include "corockpt/ckpt/checkpoint_reader.hpp"
#include "corockpt/ckpt/detail/directory_commit.hpp"
#include "corockpt/ckpt/format/checked_size.hpp"
#include "corockpt/ckpt/format/safetensors.hpp"
#include "corockpt/ckpt/format/strict_json.hpp"
#include "corockpt/plugins/storage/read_unaligned.hpp"
#include "corockpt/runtime/when_all.hpp"

namespace corockpt {

namespace {

// Bytes whose checksums one read covers (whole blocks).
constexpr std::uint64_t verify_read_bytes = 64ull << 20;

struct ChunkRef {
  const std::string* tensor;
  const ChunkRecord* chunk;
};

// Whether `file` holds a byte at `offset`, asked with a one-byte read.
Task<bool> has_byte(Storage& storage, File& file, std::uint64_t offset) {
  std::byte probe[1];
  auto got = co_await read_unaligned_at(storage, file, offset, probe);
  if (!got) co_return fail(got.error());
  co_return *got != 0;
}

// The smallest n in [low, high] at which `file` holds no byte, given none at `high`.
Task<std::uint64_t> first_missing_byte(Storage& storage, File& file, std::uint64_t low, std::uint64_t high) {
  while (low < high) {
    const std::uint64_t middle = low + (high - low) / 2;
    auto has = co_await has_byte(storage, file, middle);
    if (!has) co_return fail(has.error());
    if (*has) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  co_return low;
}

// Whether `file` is exactly `size` bytes long, probing with reads only; if not, its true
// size beside the recorded one. Storage has no stat of an open file, and reads are what
// a reader sees: a binary search (doubling past `size` first for a longer file) takes at
// most about 130 one-byte reads, and only for a file of the wrong size.
Task<std::string> size_problem(Storage& storage, File& file, std::uint64_t size) {
  auto past = co_await has_byte(storage, file, size);
  if (!past) co_return fail(past.error());
  const std::string recorded = std::to_string(size);
  if (*past) {
    // Doubling steps past `size` to an offset with no byte, then the search between.
    constexpr std::uint64_t max_offset = std::numeric_limits<std::int64_t>::max();  // off_t's
    std::uint64_t low = size + 1;  // a byte at `size`, so size < max_offset
    std::uint64_t high = low;
    std::uint64_t step = 1;
    for (;;) {
      auto more = co_await has_byte(storage, file, high);
      if (!more) co_return fail(more.error());
      if (!*more) break;
      if (high == max_offset) co_return fail(Errc::io, file.path() + " reads past the largest file offset");
      low = high + 1;
      high = max_offset - high < step ? max_offset : high + step;
      step = std::min(step * 2, max_offset);
    }
    auto actual = co_await first_missing_byte(storage, file, low, high);
    if (!actual) co_return fail(actual.error());
    co_return "the file is " + std::to_string(*actual) + " bytes, longer than the metadata's " + recorded;
  }
  if (size == 0) co_return std::string{};
  auto last = co_await has_byte(storage, file, size - 1);
  if (!last) co_return fail(last.error());
  if (*last) co_return std::string{};
  auto actual = co_await first_missing_byte(storage, file, 0, size - 1);
  if (!actual) co_return fail(actual.error());
  co_return "the file is " + std::to_string(*actual) + " bytes, shorter than the metadata's " + recorded;
}

// The safetensors header of `file` against the metadata's chunks in it.
Task<void> check_header(CheckpointIo io, File& file, const std::string& name, std::uint64_t size,
                        const std::vector<ChunkRef>& chunks, const CheckpointMetadata& metadata,
                        std::vector<VerifyProblem>& problems) {
  auto problem = [&](std::string tensor, std::string message) {
    problems.push_back({name, std::move(tensor), std::move(message)});
  };
  std::byte first8[8];
  auto got = co_await read_unaligned_at(*io.storage, file, 0, first8);
  if (!got) co_return fail(got.error());
  if (*got < 8) {
    problem("", "shorter than a safetensors header length (8 bytes)");
    co_return Result<void>{};
  }
  auto length = parse_safetensors_header_length(first8, size);
  if (!length) {
    problem("", length.error().message);
    co_return Result<void>{};
  }
  std::vector<std::byte> json(*length);
  auto read = co_await read_unaligned_at(*io.storage, file, 8, json);
  if (!read) co_return fail(read.error());
  auto header = parse_safetensors_header(std::span(json).first(*read), size);
  if (!header) {
    problem(header.error().context.fqn, header.error().message);
    co_return Result<void>{};
  }
  std::map<std::string, const SafetensorsEntry*> entries;
  for (const auto& entry : header->entries) entries[entry.name] = &entry;
  nlohmann::json sharding;
  if (auto it = header->metadata.find("DCP_SHARDING_INFO"); it != header->metadata.end()) {
    sharding = nlohmann::json::parse(it->second, nullptr, false);
  }
  if (!sharding.is_object()) problem("", "__metadata__ has no DCP_SHARDING_INFO object (PyTorch could not load it)");
  for (const auto& ref : chunks) {
    const std::string& tensor = *ref.tensor;
    auto it = entries.find(tensor);
    if (it == entries.end()) {
      problem(tensor, "the metadata puts a chunk here that the header lacks");
      continue;
    }
    const SafetensorsEntry& entry = *it->second;
    const TensorRecord& record = metadata.tensors.at(tensor);
    if (entry.dtype != record.dtype) {
      problem(tensor, "dtype " + std::string(to_string(entry.dtype)) + " in the header, " +
                          std::string(to_string(record.dtype)) + " in the metadata");
    }
    if (entry.shape != ref.chunk->box.sizes) problem(tensor, "the header's shape is not the chunk's " + ref.chunk->box.to_string());
    if (header->data_offset + entry.begin != ref.chunk->begin || header->data_offset + entry.end != ref.chunk->end) {
      problem(tensor, "the header's byte range is not the metadata's [" + std::to_string(ref.chunk->begin) + ", " +
                          std::to_string(ref.chunk->end) + ")");
    }
    if (sharding.is_object()) {
      auto info = sharding.find(tensor);
      if (info == sharding.end() || !info->is_object() || !info->contains("saved_offsets") ||
          (*info)["saved_offsets"] != nlohmann::json(ref.chunk->box.offsets)) {
        problem(tensor, "DCP_SHARDING_INFO's saved_offsets are not the chunk's offsets");
      }
    }
    entries.erase(it);
  }
  for (const auto& [tensor, entry] : entries) problem(tensor, "in the header but not in the metadata");
  co_return Result<void>{};
}

// Meshes a reader rebuilding the saved topology would trip on. A MeshSpec is over ranks
// 0..world_size-1 (model_spec.hpp: every mesh of a model spans its world), so its shape
// must hold exactly world_size ranks; and, as DeviceMesh requires, it has dims, their
// names are distinct and not empty, and no two meshes share a name.
void check_meshes(const CheckpointMetadata& metadata, std::vector<VerifyProblem>& problems) {
  const std::string file(checkpoint_metadata_file);
  auto problem = [&](std::string message) { problems.push_back({file, "", std::move(message)}); };
  std::set<std::string> meshes;
  for (const MeshSpec& mesh : metadata.meshes) {
    const std::string which = "mesh " + detail::quoted_text(mesh.name);
    if (!meshes.insert(mesh.name).second) problem("the mesh name " + detail::quoted_text(mesh.name) + " is repeated");
    if (mesh.shape.empty()) problem(which + " has no dims");
    const auto ranks = detail::checked_numel(mesh.shape);  // sizes are positive: their product
    if (!ranks || *ranks != metadata.world_size) {
      const std::string count = !ranks        ? "at least 2^63 ranks"
                                : *ranks == 1 ? "1 rank"
                                              : std::to_string(*ranks) + " ranks";
      problem(which + " of shape " + detail::list_text(mesh.shape) + " has " + count + ", but world_size is " +
              std::to_string(metadata.world_size));
    }
    std::set<std::string> dims;
    for (const std::string& dim : mesh.dim_names) {
      if (dim.empty()) {
        problem(which + " has a dim with an empty name");
      } else if (!dims.insert(dim).second) {
        problem(which + " repeats the dim name " + detail::quoted_text(dim));
      }
    }
  }
}

// PyTorch's HuggingFaceStorageReader reads every "*.safetensors" entry of the directory,
// so one the metadata does not list changes what PyTorch loads, or fails its load. Other
// entries change nothing any reader sees and are not reported.
Task<void> check_unlisted(CheckpointIo io, const std::string& dir, const CheckpointMetadata& metadata,
                          std::vector<VerifyProblem>& problems) {
  auto entries = co_await io.storage->list(dir);
  if (!entries) {
    problems.push_back({"", "", entries.error().message});
    co_return Result<void>{};
  }
  for (const DirEntry& entry : *entries) {
    if (!entry.name.ends_with(".safetensors") || metadata.files.contains(entry.name)) continue;
    problems.push_back({entry.name, "",
                        std::string(entry.is_directory ? "a directory" : "a file") +
                            " named *.safetensors that is not listed in the metadata: PyTorch's "
                            "HuggingFaceStorageReader would read it too"});
  }
  co_return Result<void>{};
}

struct ChecksumQueue {
  std::vector<ChunkRef> chunks;
  std::size_t next = 0;
  std::uint64_t done = 0;
  std::uint64_t total = 0;
};

Task<void> check_checksums(CheckpointReader& reader, ChecksumQueue& queue, std::vector<VerifyProblem>& problems,
                           const std::function<void(std::uint64_t, std::uint64_t)>& progress) {
  while (queue.next < queue.chunks.size()) {
    const ChunkRef ref = queue.chunks[queue.next++];
    const std::uint64_t length = ref.chunk->end - ref.chunk->begin;
    for (std::uint64_t at = 0; at < length; at += verify_read_bytes) {
      auto bytes = co_await reader.read(*ref.tensor, *ref.chunk, at, std::min(length, at + verify_read_bytes));
      if (!bytes) {
        problems.push_back({ref.chunk->file, *ref.tensor, bytes.error().message});
        break;  // the rest of this chunk would only repeat it
      }
      queue.done += bytes->size();
      if (progress) progress(queue.done, queue.total);
    }
  }
  co_return Result<void>{};
}

}  // namespace

Task<VerifyReport> verify_checkpoint(CheckpointIo io, std::string dir,
                                     std::function<void(std::uint64_t, std::uint64_t)> progress) {
  dir = detail::strip_trailing_slashes(std::move(dir));
  VerifyReport report;
  if (is_partial_checkpoint_name(dir)) {
    report.problems.push_back({"", "", "a partial checkpoint: a save that did not commit (never loaded)"});
  }
  auto metadata = co_await read_checkpoint_metadata(io, dir);
  if (!metadata) {
    // The file at fault: the metadata, or one of the indexes it points to.
    const std::string& path = metadata.error().context.path;
    const auto slash = path.find_last_of('/');
    const std::string file = path.empty() ? std::string(checkpoint_metadata_file)
                                          : slash == std::string::npos ? path : path.substr(slash + 1);
    report.problems.push_back({file, metadata.error().context.fqn, metadata.error().message});
    co_return report;
  }
  check_meshes(*metadata, report.problems);
  auto listed = co_await check_unlisted(io, dir, *metadata, report.problems);
  if (!listed) co_return fail(listed.error());
  report.tensors = metadata->tensors.size();
  std::map<std::string, std::vector<ChunkRef>> by_file;
  for (const auto& [name, record] : metadata->tensors) {
    if (auto ok = check_tiling(name, record); !ok) report.problems.push_back({"", name, ok.error().message});
    for (const auto& chunk : record.chunks) by_file[chunk.file].push_back({&name, &chunk});
    report.chunks += record.chunks.size();
  }
  // Objects are checked as chunks without a box; their files hold nothing else.
  std::deque<ChunkRecord> object_ranges;
  std::set<std::string> object_files;
  for (const auto& [name, object] : metadata->objects) {
    object_ranges.push_back({Box{}, object.file, object.begin, object.end, object.crc32c});
    by_file[object.file].push_back({&name, &object_ranges.back()});
    object_files.insert(object.file);
  }
  report.objects = metadata->objects.size();
  auto reader = CheckpointReader::with_metadata(io, dir, std::move(*metadata));
  const CheckpointMetadata& md = reader->metadata();
  ChecksumQueue queue;
  for (const auto& [name, size] : md.files) {
    ++report.files;
    std::set<std::string> one{name};
    if (auto opened = co_await reader->open_files(one); !opened) {
      report.problems.push_back({name, "", opened.error().code == Errc::not_found ? "missing data file"
                                                                                    : opened.error().message});
      continue;
    }
    File& file = *reader->file(name);
    auto wrong_size = co_await size_problem(*io.storage, file, size);
    if (!wrong_size) {  // unreadable: a problem of this file, not a reason to stop
      report.problems.push_back({name, "", wrong_size.error().message});
      continue;
    }
    if (!wrong_size->empty()) {
      report.problems.push_back({name, "", *wrong_size});
      continue;  // its header and ranges cannot be trusted
    }
    if (object_files.contains(name)) {
      // no header: the objects' bytes one after the other
    } else if (auto ok = co_await check_header(io, file, name, size, by_file[name], md, report.problems); !ok) {
      report.problems.push_back({name, "", ok.error().message});
      continue;
    }
    for (const auto& ref : by_file[name]) {
      queue.chunks.push_back(ref);
      queue.total += ref.chunk->end - ref.chunk->begin;
    }
  }
  std::vector<Task<void>> workers;
  for (int w = 0; w < 8; ++w) workers.push_back(check_checksums(*reader, queue, report.problems, progress));
  if (auto ok = all_ok(co_await when_all(std::move(workers))); !ok) co_return fail(ok.error());
  report.bytes_checked = queue.done;
  co_return report;
}

}  // namespace corockpt
