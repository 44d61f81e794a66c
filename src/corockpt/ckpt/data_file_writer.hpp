#pragma once
/// @file
/// Writing one data file: a safetensors header and the chunks' bytes, streamed through
/// the staging buffers as an image of the file — aligned blocks (so O_DIRECT works), the
/// last one zero-padded, then truncated to the true size — with many writes in flight,
/// the space reserved first (a full disk fails before data moves) and an fsync last.
/// Each chunk's CRC-32C per checksum block is computed from the bytes as they are staged.
///
/// A file whose image is already in memory (a snapshot laid out by data_file_layout.hpp)
/// is written from there, with no copy into the staging buffers: only the checksums are
/// computed on the workers.
///
/// Chunks in device memory are copied through their device into the staging buffers
/// (which should then come from the device's staging allocator); their checksums are
/// computed from the staged bytes, a block that spans two buffers from its pieces'
/// (crc32c_combine).

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "corockpt/ckpt/checkpoint_io.hpp"
#include "corockpt/ckpt/local_chunks.hpp"
#include "corockpt/plugins/device/device.hpp"

namespace corockpt {

/// Memory alignment and size granule of a file image written in place.
inline constexpr std::size_t file_image_alignment = 4096;

struct DataFileContent {
  std::string header;                     ///< the first bytes of the file (length + JSON)
  std::vector<const LocalChunk*> chunks;  ///< packed after the header, in this order
  /// Empty, or the whole file already in memory: the header, then the chunks (whose
  /// bytes must be these), starting file_image_alignment-aligned and zero-padded to a
  /// multiple of it. Written from there instead of through the staging buffers.
  std::span<const std::byte> image;
  /// The device whose memory holds the chunks that are not in host memory (their
  /// LocalChunk::space); null when all are host memory.
  Device* device = nullptr;
};

struct WrittenChunk {
  std::uint64_t begin = 0;  ///< byte offsets in the file
  std::uint64_t end = 0;
  std::vector<std::uint32_t> crc32c;  ///< per checksum block of [begin, end)
};

/// Where write_data_file puts `content`'s chunks (after the header, packed in order) and
/// checksum lists of the length it fills (zeros until it does): what it returns, known
/// before a byte is written. The planning benchmark builds rank plans from it.
std::vector<WrittenChunk> chunk_placement(const DataFileContent& content, std::uint64_t checksum_block);

/// Writes `content` to a new file `path` and makes it durable. On the caller's executor:
/// `on_written(bytes)` as bytes reach the file; streaming through the staging buffers (no
/// image), `on_staged(end)` each time the file's prefix whose bytes are all staged grows
/// (its new end): from then on the chunks' bytes before `end` are no longer read.
/// @returns per chunk its range and checksums; storage errors naming the path
///   (Errc::already_exists if the file exists); Errc::invalid_argument for a chunk in
///   device memory without `content.device` of its space; the device's copy errors.
Task<std::vector<WrittenChunk>> write_data_file(CheckpointIo io, std::string path, const DataFileContent& content,
                                                std::uint64_t checksum_block,
                                                std::function<void(std::uint64_t)> on_written = {},
                                                std::function<void(std::uint64_t)> on_staged = {});

}  // namespace corockpt
