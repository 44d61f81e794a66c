// libFuzzer target for the on-disk format's parsers (built and run by run_fuzzer.sh).
// Every input is read three ways: as a whole safetensors file, as a bare safetensors
// header and as metadata text. Besides not crashing, whatever a parser accepts must keep
// the promises of its header, survive a write-and-read-back, and (for small tensors)
// agree with a brute-force count of which elements the chunks cover.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "corockpt/ckpt/format/checkpoint_metadata.hpp"
#include "corockpt/ckpt/format/safetensors.hpp"

namespace {

using namespace corockpt;

// A broken promise: abort, so libFuzzer keeps the input that broke it.
void require(bool holds, const char* promise) {
  if (holds) return;
  std::fprintf(stderr, "format_fuzzer: broken promise: %s\n", promise);
  std::abort();
}

std::span<const std::byte> bytes_of(const std::string& text) { return std::as_bytes(std::span(text.data(), text.size())); }

void check_accepted_header(const SafetensorsHeader& header, std::uint64_t file_size) {
  std::uint64_t next = 0;
  for (const auto& e : header.entries) {
    require(e.begin == next && e.end >= e.begin, "entries are packed from 0 in data order");
    next = e.end;
  }
  require(header.data_bytes == next, "data_bytes is the largest end");
  require(header.data_offset + header.data_bytes <= file_size, "data lies in the file");

  const std::string encoded = encode_safetensors_header(header.entries, header.metadata);
  require(encoded.size() % 8 == 0, "the encoded header is padded to 8");
  auto again = parse_safetensors_header(bytes_of(encoded).subspan(8), encoded.size() + header.data_bytes);
  require(again.has_value(), "an accepted header re-encodes to an accepted one");
  require(again->entries == header.entries && again->metadata == header.metadata, "and reads back the same");
}

void fuzz_safetensors(std::span<const std::byte> input) {
  // As a whole file: the 8-byte length, the header, the data.
  if (auto length = parse_safetensors_header_length(input, input.size())) {
    require(8 + *length <= input.size(), "the header length fits the file");
    if (auto header = parse_safetensors_header(input.subspan(8, *length), input.size())) {
      require(header->data_offset == 8 + *length, "the data starts after the header");
      check_accepted_header(*header, input.size());
    }
  }
  // As the header alone (most seeds are JSON), in a file with room for some data.
  const std::uint64_t file_size = 8 + input.size() + 4096;
  if (auto header = parse_safetensors_header(input, file_size)) check_accepted_header(*header, file_size);
}

// Whether the chunks cover every element exactly once, by counting, for tensors small
// enough to count.
std::optional<bool> tiles_by_counting(const TensorRecord& record) {
  std::int64_t total = 1;
  for (std::int64_t s : record.shape) {
    if (__builtin_mul_overflow(total, s, &total) || total > 4096) return std::nullopt;
  }
  std::vector<int> covered(static_cast<std::size_t>(total), 0);
  for (const auto& chunk : record.chunks) {
    const Box& box = chunk.box;
    if (box.empty()) continue;
    std::vector<std::int64_t> index(box.sizes.size(), 0);  // an odometer over the box
    while (true) {
      std::int64_t flat = 0;
      for (std::size_t d = 0; d < index.size(); ++d) flat = flat * record.shape[d] + box.offsets[d] + index[d];
      ++covered[static_cast<std::size_t>(flat)];
      std::size_t d = index.size();
      while (d > 0 && ++index[d - 1] == box.sizes[d - 1]) index[--d] = 0;
      if (d == 0) break;
    }
  }
  for (int c : covered) {
    if (c != 1) return false;
  }
  return true;
}

void fuzz_metadata(std::string_view text) {
  auto metadata = parse_checkpoint_metadata(text);
  if (!metadata) return;
  for (const auto& [name, record] : metadata->tensors) {
    for (const auto& chunk : record.chunks) {
      const auto file = metadata->files.find(chunk.file);
      require(file != metadata->files.end() && chunk.begin <= chunk.end && chunk.end <= file->second,
              "an accepted chunk lies in a listed file");
      require(chunk.crc32c.size() == checksum_blocks(chunk.end - chunk.begin, metadata->block_size),
              "an accepted chunk has one checksum per block");
    }
    const bool tiled = check_tiling(name, record).has_value();
    if (auto counted = tiles_by_counting(record)) require(tiled == *counted, "check_tiling agrees with counting");
  }

  const std::string written = to_json_text(*metadata);
  auto again = parse_checkpoint_metadata(written);
  require(again.has_value(), "accepted metadata re-writes to accepted metadata");
  require(again->tensors == metadata->tensors && again->files == metadata->files, "and reads back the same");
  require(to_json_text(*again) == written, "and writes the same text again");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto input = std::as_bytes(std::span(data, size));
  fuzz_safetensors(input);
  fuzz_metadata(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
