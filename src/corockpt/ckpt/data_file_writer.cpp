#include "corockpt/ckpt/data_file_writer.hpp"

#include <algorithm>
#include <cstring>

#include "corockpt/ckpt/format/checkpoint_metadata.hpp"
#include "corockpt/ckpt/format/crc32c.hpp"
#include "corockpt/runtime/when_all.hpp"

namespace corockpt {

namespace {

// The file as a sequence of byte segments: the header, then each chunk.
class FileImage {
 public:
  FileImage(const DataFileContent& content, std::uint64_t checksum_block) : block_(checksum_block) {
    segments_.push_back({0, std::as_bytes(std::span(content.header))});
    std::uint64_t at = content.header.size();
    for (const LocalChunk* chunk : content.chunks) {
      segments_.push_back({at, chunk->bytes});
      at += chunk->bytes.size();
    }
    size_ = at;
    written_.resize(content.chunks.size());
    for (std::size_t c = 0; c < content.chunks.size(); ++c) {
      const Segment& s = segments_[c + 1];
      written_[c] = {s.at, s.at + s.bytes.size(), std::vector<std::uint32_t>(checksum_blocks(s.bytes.size(), block_))};
    }
  }

  std::uint64_t size() const { return size_; }
  std::vector<WrittenChunk> take_written() { return std::move(written_); }

  /// Copies file bytes [offset, offset + length) into `out` (unless it is null: the file
  /// is written in place) and checksums every chunk block that starts in that range
  /// (reading the block from the chunk itself, so blocks need not line up with staging
  /// buffers and each is computed exactly once).
  /// Runs on a worker; calls for different ranges touch different checksums.
  void fill(std::uint64_t offset, std::uint64_t length, std::byte* out) {
    const std::uint64_t stop = offset + length;
    for (std::size_t i = 0; i < segments_.size(); ++i) {
      const Segment& s = segments_[i];
      const std::uint64_t from = std::max(offset, s.at), to = std::min(stop, s.at + s.bytes.size());
      if (from >= to) continue;
      if (out) std::memcpy(out + (from - offset), s.bytes.data() + (from - s.at), to - from);
      if (i == 0) continue;
      auto& crcs = written_[i - 1].crc32c;
      for (std::uint64_t k = (from - s.at + block_ - 1) / block_; s.at + k * block_ < to; ++k) {
        const std::uint64_t begin = k * block_;
        crcs[k] = crc32c(s.bytes.subspan(begin, std::min<std::uint64_t>(block_, s.bytes.size() - begin)));
      }
    }
  }

 private:
  struct Segment {
    std::uint64_t at;
    std::span<const std::byte> bytes;
  };
  std::uint64_t block_;
  std::vector<Segment> segments_;
  std::uint64_t size_ = 0;
  std::vector<WrittenChunk> written_;
};

struct Progress {
  std::uint64_t next = 0;  // the next file offset to stage
  bool failed = false;     // a write failed: the other workers stop taking work
  std::function<void(std::uint64_t)> on_written;
};

// One of several concurrent loops: take a buffer, stage the next piece of the file into
// it on a worker thread, write it, repeat. The pool's size bounds the writes in flight.
Task<void> write_pieces(CheckpointIo io, File& file, FileImage& image, Progress& progress) {
  while (progress.next < image.size() && !progress.failed) {
    auto buffer = co_await io.staging->acquire();
    if (!buffer) co_return fail(buffer.error());
    if (progress.next >= image.size() || progress.failed) break;  // others took the rest meanwhile
    const std::uint64_t offset = progress.next;
    const std::uint64_t length = std::min<std::uint64_t>(buffer->size(), image.size() - offset);
    progress.next += length;
    const std::uint64_t align = std::max<std::uint32_t>(file.offset_alignment(), 1);
    const std::uint64_t padded = (length + align - 1) / align * align;
    std::byte* data = buffer->data();
    FileImage* staged = &image;
    auto staging = co_await io.runtime->offload([staged, offset, length, padded, data] {
      staged->fill(offset, length, data);
      std::memset(data + length, 0, padded - length);
    });
    if (!staging) co_return fail(staging.error());
    auto wrote = co_await io.storage->write_at(file, offset, {data, padded});
    if (!wrote) {
      progress.failed = true;
      co_return fail(wrote.error());
    }
    if (progress.on_written) progress.on_written(length);
  }
  co_return Result<void>{};
}

// The same loop for a file whose image is in memory: checksum a piece on a worker, write
// it from the image. The number of these loops bounds the writes in flight.
Task<void> write_pieces_in_place(CheckpointIo io, File& file, FileImage& image, std::span<const std::byte> memory,
                                 Progress& progress) {
  const std::uint64_t piece = io.staging->buffer_bytes();
  const std::uint64_t align = std::max<std::uint32_t>(file.offset_alignment(), 1);
  while (progress.next < image.size() && !progress.failed) {
    const std::uint64_t offset = progress.next;
    const std::uint64_t length = std::min<std::uint64_t>(piece, image.size() - offset);
    progress.next += length;
    FileImage* staged = &image;
    auto checksums = co_await io.runtime->offload([staged, offset, length] { staged->fill(offset, length, nullptr); });
    if (!checksums) co_return fail(checksums.error());
    const std::uint64_t padded = (length + align - 1) / align * align;  // within the image: checked by the caller
    auto wrote = co_await io.storage->write_at(file, offset, memory.subspan(offset, padded));
    if (!wrote) {
      progress.failed = true;
      co_return fail(wrote.error());
    }
    if (progress.on_written) progress.on_written(length);
  }
  co_return Result<void>{};
}

// Whether `content.image` can go to `file` as it is: aligned for it, and padded far
// enough for its last aligned write.
bool writable_in_place(const DataFileContent& content, const File& file, std::uint64_t size) {
  if (content.image.empty()) return false;
  const std::uint64_t align = std::max<std::uint32_t>(file.offset_alignment(), 1);
  const auto address = reinterpret_cast<std::uintptr_t>(content.image.data());
  return address % std::max<std::uint32_t>(file.memory_alignment(), 1) == 0 &&
         content.image.size() >= (size + align - 1) / align * align;
}

}  // namespace

Task<std::vector<WrittenChunk>> write_data_file(CheckpointIo io, std::string path, const DataFileContent& content,
                                                std::uint64_t checksum_block,
                                                std::function<void(std::uint64_t)> on_written) {
  FileImage image(content, checksum_block);
  auto file = co_await io.storage->open(path, {.mode = OpenMode::create, .direct = DirectIo::prefer});
  if (!file) co_return fail(file.error());
  if (auto ok = co_await io.storage->allocate(*file, image.size()); !ok) co_return fail(ok.error());

  Progress progress{.on_written = std::move(on_written)};
  const std::uint64_t pieces = (image.size() + io.staging->buffer_bytes() - 1) / io.staging->buffer_bytes();
  // A device with a coarser alignment than the image's is written through the staging
  // buffers instead.
  const bool in_place = writable_in_place(content, *file, image.size());
  std::vector<Task<void>> workers;
  for (std::uint64_t w = 0; w < std::min<std::uint64_t>(pieces, io.staging->buffer_count()); ++w) {
    if (in_place) {
      workers.push_back(write_pieces_in_place(io, *file, image, content.image, progress));
    } else {
      workers.push_back(write_pieces(io, *file, image, progress));
    }
  }
  if (auto ok = all_ok(co_await when_all(std::move(workers))); !ok) co_return fail(ok.error());
  // The padded tail of an O_DIRECT file goes; a buffered file already has its size.
  if (file->direct()) {
    if (auto ok = co_await io.storage->truncate(*file, image.size()); !ok) co_return fail(ok.error());
  }
  if (auto ok = co_await io.storage->fsync(*file); !ok) co_return fail(ok.error());
  co_return image.take_written();
}

}  // namespace corockpt
