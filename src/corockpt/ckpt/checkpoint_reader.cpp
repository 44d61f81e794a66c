#include "corockpt/ckpt/checkpoint_reader.hpp"

#include <atomic>
#include <cstdio>
#include <cstring>

#include "corockpt/ckpt/detail/directory_commit.hpp"
#include "corockpt/ckpt/detail/index_reads.hpp"
#include "corockpt/plugins/storage/read_unaligned.hpp"
#include "corockpt/ckpt/format/crc32c.hpp"
#include "corockpt/runtime/when_all.hpp"

namespace corockpt {

namespace {

// The largest metadata file read (1 GiB): no real checkpoint's comes near it (a
// layout of thousands of ranks and tensors makes tens of MiB), and a larger file is
// not ours; reading it stops here, before memory runs out.
constexpr std::uint64_t max_metadata_bytes = 1ull << 30;

}  // namespace

bool is_partial_checkpoint_name(std::string_view path) {
  const std::string dir = detail::strip_trailing_slashes(std::string(path));
  const auto slash = dir.rfind('/');
  return dir.find(".tmp-", slash == std::string::npos ? 0 : slash + 1) != std::string::npos;
}

namespace {

// The header alone (a version 3 checkpoint's tensors are still in its indexes).
Task<CheckpointMetadata> read_header(CheckpointIo io, const std::string& dir) {
  const std::string path = dir + "/" + std::string(checkpoint_metadata_file);
  auto text = co_await detail::read_whole_file(io, path, max_metadata_bytes, "the metadata file");
  if (!text) {
    if (text.error().code == Errc::not_found) {
      co_return fail(Errc::not_found,
                     "no " + std::string(checkpoint_metadata_file) +
                         ": not a complete checkpoint (its save did not commit, or this is not a checkpoint)",
                     {.path = path, .operation = "open checkpoint"});
    }
    co_return fail(text.error());
  }
  auto metadata = parse_checkpoint_metadata(*text);
  if (!metadata) co_return fail(metadata.error().with_path(path));
  co_return std::move(*metadata);
}

}  // namespace

Task<CheckpointMetadata> read_checkpoint_metadata(CheckpointIo io, std::string dir) {
  dir = detail::strip_trailing_slashes(std::move(dir));
  auto header = co_await read_header(io, dir);
  if (!header || !header->index) co_return header;
  co_return co_await detail::read_all_indexes(io, dir, std::move(*header));
}

Task<std::unique_ptr<CheckpointReader>> CheckpointReader::open(CheckpointIo io, std::string dir) {
  dir = detail::strip_trailing_slashes(std::move(dir));
  if (is_partial_checkpoint_name(dir)) {
    co_return fail(Errc::invalid_argument, "a partial checkpoint (a save that has not committed) is never loaded",
                   {.path = dir, .operation = "open checkpoint"});
  }
  auto metadata = co_await read_checkpoint_metadata(io, dir);
  if (!metadata) co_return fail(metadata.error());
  co_return std::unique_ptr<CheckpointReader>(new CheckpointReader(io, std::move(dir), std::move(*metadata)));
}

Task<std::unique_ptr<CheckpointReader>> CheckpointReader::open_for(CheckpointIo io, std::string dir,
                                                                   std::span<const LocalChunk> targets) {
  dir = detail::strip_trailing_slashes(std::move(dir));
  if (is_partial_checkpoint_name(dir)) {
    co_return fail(Errc::invalid_argument, "a partial checkpoint (a save that has not committed) is never loaded",
                   {.path = dir, .operation = "open checkpoint"});
  }
  auto metadata = co_await read_header(io, dir);
  if (metadata && metadata->index) metadata = co_await detail::read_indexes_for(io, dir, std::move(*metadata), targets);
  if (!metadata) co_return fail(metadata.error());
  co_return std::unique_ptr<CheckpointReader>(new CheckpointReader(io, std::move(dir), std::move(*metadata)));
}

namespace {

Task<File> open_for_reading(CheckpointIo io, std::string path) {
  // Only regular files: a FIFO or a device in a checkpoint would block or never end.
  auto file = co_await io.storage->open(std::move(path),
                                        {.mode = OpenMode::read, .direct = DirectIo::prefer, .regular_only = true});
  if (file && !file->direct()) {
    // Once a process: a file system that refuses O_DIRECT (tmpfs) refuses it for every file.
    static std::atomic<bool> said{false};
    if (!said.exchange(true)) {
      std::fprintf(stderr, "corockpt: %s: the file system refuses O_DIRECT; reading through the page cache\n",
                   file->path().c_str());
    }
  }
  co_return file;
}

}  // namespace

Task<void> CheckpointReader::open_files(std::set<std::string> files) {
  std::vector<std::string> names;
  std::vector<Task<File>> opens;
  for (const auto& name : files) {
    if (files_.contains(name)) continue;
    names.push_back(name);
    opens.push_back(open_for_reading(io_, dir_ + "/" + name));
  }
  auto opened = all_ok(co_await when_all(std::move(opens)));
  if (!opened) co_return fail(opened.error());
  for (std::size_t i = 0; i < names.size(); ++i) files_[names[i]] = std::move((*opened)[i]);
  co_return Result<void>{};
}

Task<std::vector<std::byte>> CheckpointReader::read(const std::string& name, const ChunkRecord& chunk,
                                                    std::uint64_t from, std::uint64_t to) {
  const std::uint64_t block = metadata_.block_size;
  const std::uint64_t length = chunk.end - chunk.begin;
  const std::uint64_t first = from / block * block;
  // Rounded up without overflow (block_size comes from the metadata: any value).
  const std::uint64_t last = std::min(length, to % block == 0 ? to : to - to % block + std::min(block, length - (to - to % block)));
  auto it = files_.find(chunk.file);
  if (it == files_.end()) {
    co_return fail(Errc::internal, "data file not opened before reading", {.fqn = name, .path = chunk.file});
  }
  File& file = it->second;
  std::vector<std::byte> bytes(last - first);
  auto got = co_await read_unaligned_at(*io_.storage, file, chunk.begin + first, bytes);
  if (!got) co_return fail(got.error().with_fqn(name));
  if (*got != bytes.size()) {
    co_return fail(Errc::corrupt,
                   "the data file ends at byte " + std::to_string(chunk.begin + first + *got) + ", before " + name +
                       "'s chunk does (byte " + std::to_string(chunk.end) + ")",
                   {.fqn = name, .path = file.path(), .operation = "read"});
  }
  const std::vector<std::byte>* data = &bytes;
  const std::vector<std::uint32_t>* crcs = &chunk.crc32c;
  auto bad_block = co_await io_.runtime->offload([data, crcs, first, block]() -> std::int64_t {
    for (std::uint64_t at = 0; at < data->size(); at += block) {
      const std::uint64_t k = (first + at) / block;
      const std::size_t n = std::min<std::uint64_t>(block, data->size() - at);
      if (crc32c(std::span(*data).subspan(at, n)) != (*crcs)[k]) return static_cast<std::int64_t>(k);
    }
    return -1;
  });
  if (!bad_block) co_return fail(bad_block.error());
  if (*bad_block >= 0) {
    co_return fail(Errc::corrupt,
                   "checksum mismatch in " + name + "'s chunk " + chunk.box.to_string() + ", block " +
                       std::to_string(*bad_block) + " (bytes " + std::to_string(chunk.begin + *bad_block * block) +
                       ".." + std::to_string(std::min(chunk.end, chunk.begin + (*bad_block + 1) * block)) + ")",
                   {.fqn = name, .path = file.path(), .operation = "read"});
  }
  // Only the bytes asked for.
  bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(from - first));
  bytes.resize(to - from);
  co_return bytes;
}

Task<std::vector<std::byte>> CheckpointReader::read_object(const std::string& name) {
  const auto found = metadata_.objects.find(name);
  if (found == metadata_.objects.end()) {
    co_return fail(Errc::not_found, "the checkpoint has no object " + name, {.fqn = name, .path = dir_});
  }
  const ObjectRecord& object = found->second;
  std::set<std::string> file{object.file};
  if (auto opened = co_await open_files(file); !opened) co_return fail(opened.error());
  const ChunkRecord range{Box{}, object.file, object.begin, object.end, object.crc32c};
  co_return co_await read(name, range, 0, object.end - object.begin);
}

}  // namespace corockpt
