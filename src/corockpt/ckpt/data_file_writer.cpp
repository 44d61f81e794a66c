#include "corockpt/ckpt/data_file_writer.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "corockpt/ckpt/format/checkpoint_metadata.hpp"
#include "corockpt/ckpt/format/crc32c.hpp"
#include "corockpt/runtime/when_all.hpp"

namespace corockpt {

namespace {

// The file as a sequence of byte segments: the header, then each chunk.
class FileImage {
 public:
  FileImage(const DataFileContent& content, std::uint64_t checksum_block) : block_(checksum_block) {
    segments_.push_back({0, std::as_bytes(std::span(content.header)), false});
    std::uint64_t at = content.header.size();
    for (const LocalChunk* chunk : content.chunks) {
      const bool on_device = chunk->space != MemorySpace::host;
      segments_.push_back({at, chunk->bytes, on_device});
      has_device_ = has_device_ || on_device;
      at += chunk->bytes.size();
    }
    size_ = at;
    written_ = chunk_placement(content, checksum_block);
  }

  std::uint64_t size() const { return size_; }
  bool has_device() const { return has_device_; }
  std::vector<WrittenChunk> take_written() { return std::move(written_); }

  /// Copies the host bytes of file range [offset, offset + length) into `out` (unless it
  /// is null: the file is written in place) and checksums every host chunk block that
  /// starts in that range (reading the block from the chunk itself, so blocks need not
  /// line up with staging buffers and each is computed exactly once). Device bytes are
  /// left to device_copies and checksum_staged.
  /// Runs on a worker; calls for different ranges touch different checksums.
  void fill(std::uint64_t offset, std::uint64_t length, std::byte* out) {
    const std::uint64_t stop = offset + length;
    for (std::size_t i = 0; i < segments_.size(); ++i) {
      const Segment& s = segments_[i];
      const std::uint64_t from = std::max(offset, s.at), to = std::min(stop, s.at + s.bytes.size());
      if (from >= to || s.on_device) continue;
      if (out) std::memcpy(out + (from - offset), s.bytes.data() + (from - s.at), to - from);
      if (i == 0) continue;
      auto& crcs = written_[i - 1].crc32c;
      for (std::uint64_t k = (from - s.at + block_ - 1) / block_; s.at + k * block_ < to; ++k) {
        const std::uint64_t begin = k * block_;
        crcs[k] = crc32c(s.bytes.subspan(begin, std::min<std::uint64_t>(block_, s.bytes.size() - begin)));
      }
    }
  }

  /// The device-to-host copies that stage the device bytes of [offset, offset + length)
  /// into `out`.
  std::vector<CopyPiece> device_copies(std::uint64_t offset, std::uint64_t length, std::byte* out) const {
    std::vector<CopyPiece> copies;
    for (const Segment& s : segments_) {
      const std::uint64_t from = std::max(offset, s.at), to = std::min(offset + length, s.at + s.bytes.size());
      if (from < to && s.on_device) copies.push_back({out + (from - offset), s.bytes.data() + (from - s.at), to - from});
    }
    return copies;
  }

  /// Checksums the device bytes of [offset, offset + length) from their staged copy in
  /// `out`: a block wholly inside at once, one that spans staging buffers from its
  /// pieces once the last has arrived. Runs on a worker.
  void checksum_staged(std::uint64_t offset, std::uint64_t length, const std::byte* out) {
    const std::uint64_t stop = offset + length;
    for (std::size_t i = 1; i < segments_.size(); ++i) {
      const Segment& s = segments_[i];
      const std::uint64_t from = std::max(offset, s.at), to = std::min(stop, s.at + s.bytes.size());
      if (from >= to || !s.on_device) continue;
      for (std::uint64_t k = (from - s.at) / block_; s.at + k * block_ < to; ++k) {
        const std::uint64_t block_begin = s.at + k * block_;
        const std::uint64_t block_end = std::min(block_begin + block_, s.at + s.bytes.size());
        const std::uint64_t begin = std::max(from, block_begin), end = std::min(to, block_end);
        const std::uint32_t crc = crc32c({out + (begin - offset), end - begin});
        if (begin == block_begin && end == block_end) {
          written_[i - 1].crc32c[k] = crc;
        } else {
          add_piece(i - 1, k, {begin - block_begin, end - begin, crc}, block_end - block_begin);
        }
      }
    }
  }

 private:
  struct Segment {
    std::uint64_t at;
    std::span<const std::byte> bytes;
    bool on_device;
  };
  struct BlockPiece {
    std::uint64_t begin;  // in the block
    std::uint64_t length;
    std::uint32_t crc;
  };

  // Keeps a piece of chunk `c`'s block `k`; the piece that completes the block folds
  // them all, in order, into the block's checksum.
  void add_piece(std::size_t c, std::uint64_t k, BlockPiece piece, std::uint64_t block_length) {
    std::lock_guard lock(pieces_mutex_);
    auto& pieces = pieces_[{c, k}];
    pieces.push_back(piece);
    std::uint64_t have = 0;
    for (const BlockPiece& p : pieces) have += p.length;
    if (have < block_length) return;
    std::sort(pieces.begin(), pieces.end(), [](const BlockPiece& a, const BlockPiece& b) { return a.begin < b.begin; });
    std::uint32_t crc = pieces.front().crc;
    for (std::size_t p = 1; p < pieces.size(); ++p) crc = crc32c_combine(crc, pieces[p].crc, pieces[p].length);
    written_[c].crc32c[k] = crc;
    pieces_.erase({c, k});
  }

  std::uint64_t block_;
  std::vector<Segment> segments_;
  bool has_device_ = false;
  std::uint64_t size_ = 0;
  std::vector<WrittenChunk> written_;
  std::mutex pieces_mutex_;
  std::map<std::pair<std::size_t, std::uint64_t>, std::vector<BlockPiece>> pieces_;
};

struct Progress {
  std::uint64_t next = 0;  // the next file offset to stage
  bool failed = false;     // a write failed: the other workers stop taking work
  std::function<void(std::uint64_t)> on_written;
  // Streaming: which pieces (of one staging buffer each) are staged, and how many from
  // the start are, for on_staged.
  std::uint64_t piece_bytes = 0;
  std::vector<bool> staged;
  std::size_t staged_prefix = 0;
  std::function<void(std::uint64_t)> on_staged;

  void piece_staged(std::uint64_t offset, std::uint64_t file_size) {
    staged[offset / piece_bytes] = true;
    const std::size_t before = staged_prefix;
    while (staged_prefix < staged.size() && staged[staged_prefix]) ++staged_prefix;
    if (staged_prefix != before && on_staged) on_staged(std::min(staged_prefix * piece_bytes, file_size));
  }
};

// One of several concurrent loops: take a buffer, stage the next piece of the file into
// it (host bytes on a worker thread, device bytes through `device`), write it, repeat.
// The pool's size bounds the writes in flight.
Task<void> write_pieces(CheckpointIo io, File& file, FileImage& image, Device* device, Progress& progress) {
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
    if (image.has_device()) {
      const std::vector<CopyPiece> copies = image.device_copies(offset, length, data);
      if (!copies.empty()) {
        const std::span<const CopyPiece> batch(copies);
        auto copied = co_await device->copy(CopyDirection::to_host, batch);
        if (!copied) {
          progress.failed = true;
          co_return fail(copied.error());
        }
        auto summed =
            co_await io.runtime->offload([staged, offset, length, data] { staged->checksum_staged(offset, length, data); });
        if (!summed) co_return fail(summed.error());
      }
    }
    progress.piece_staged(offset, image.size());
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

std::vector<WrittenChunk> chunk_placement(const DataFileContent& content, std::uint64_t checksum_block) {
  std::vector<WrittenChunk> written;
  written.reserve(content.chunks.size());
  std::uint64_t at = content.header.size();
  for (const LocalChunk* chunk : content.chunks) {
    const std::uint64_t size = chunk->bytes.size();
    written.push_back({at, at + size, std::vector<std::uint32_t>(checksum_blocks(size, checksum_block))});
    at += size;
  }
  return written;
}

Task<std::vector<WrittenChunk>> write_data_file(CheckpointIo io, std::string path, const DataFileContent& content,
                                                std::uint64_t checksum_block,
                                                std::function<void(std::uint64_t)> on_written,
                                                std::function<void(std::uint64_t)> on_staged) {
  FileImage image(content, checksum_block);
  for (const LocalChunk* chunk : content.chunks) {
    if (chunk->space == MemorySpace::host) continue;
    if (!content.device || content.device->space() != chunk->space || !content.image.empty()) {
      co_return fail(Errc::invalid_argument,
                     chunk->name + " lies in " + std::string(to_string(chunk->space)) +
                         " memory: give the save that device (SaveOptions::device), or save from a snapshot",
                     {.fqn = chunk->name, .operation = "save"});
    }
  }
  auto file = co_await io.storage->open(path, {.mode = OpenMode::create, .direct = DirectIo::prefer});
  if (!file) co_return fail(file.error());
  if (auto ok = co_await io.storage->allocate(*file, image.size()); !ok) co_return fail(ok.error());

  const std::uint64_t pieces = (image.size() + io.staging->buffer_bytes() - 1) / io.staging->buffer_bytes();
  Progress progress{.on_written = std::move(on_written),
                    .piece_bytes = io.staging->buffer_bytes(),
                    .staged = std::vector<bool>(pieces, false),
                    .on_staged = std::move(on_staged)};
  // A device with a coarser alignment than the image's is written through the staging
  // buffers instead.
  const bool in_place = writable_in_place(content, *file, image.size());
  std::vector<Task<void>> workers;
  for (std::uint64_t w = 0; w < std::min<std::uint64_t>(pieces, io.staging->buffer_count()); ++w) {
    if (in_place) {
      workers.push_back(write_pieces_in_place(io, *file, image, content.image, progress));
    } else {
      workers.push_back(write_pieces(io, *file, image, content.device, progress));
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
