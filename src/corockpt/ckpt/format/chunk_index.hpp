#pragma once
/// @file
/// The binary indexes of a checkpoint of format version 3, beside its JSON header
/// (checkpoint_metadata.hpp). At thousands of ranks a list of every chunk in one JSON
/// document is gigabytes that every loading rank must parse; instead:
///
/// - `corockpt.index.bin`, written by the coordinator: every tensor, with its dtype, shape
///   and chunks as runs (chunk_runs.hpp) saying which rank wrote each chunk, in the order
///   of their name hashes. Its size grows with the tensors, not the ranks, and a loading
///   rank looks its tensors up where their hashes put them without decoding the rest.
/// - `rank<NNNNN>-index.bin`, written by each rank beside its data files: the data files
///   it wrote with their sizes, and each chunk it wrote (keyed by name_hash of its tensor
///   and its box) with its file, byte range and CRC-32C per checksum block. A load reads
///   only the indexes of the ranks whose chunks it needs.
///
/// Both are little-endian; a rank index ends in the CRC-32C of the bytes before it and
/// carries the save's id (the header's `index.save_id`), so a rank index of another save
/// is refused. The global index's size and CRC-32C are in the header.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "corockpt/ckpt/box.hpp"
#include "corockpt/ckpt/dtype.hpp"
#include "corockpt/ckpt/format/chunk_runs.hpp"
#include "corockpt/runtime/error.hpp"

namespace corockpt {

inline constexpr std::string_view tensor_index_file = "corockpt.index.bin";

/// 64-bit FNV-1a.
std::uint64_t fnv1a64(std::string_view bytes);
/// Of a tensor's name: how a rank index, a plan and the tensor index name a tensor.
inline std::uint64_t name_hash(std::string_view name) { return fnv1a64(name); }

/// `rank<NNNNN>-index.bin`.
std::string rank_index_file_name(int rank);

/// Where a small tensor saved whole, in one chunk of at most one checksum block, lies:
/// Adam's 0-d steps, small buffers are written by one rank each, spread over all of them,
/// so a load that had to find them in their writers' indexes would read the index of
/// nearly every rank.
struct WholeChunk {
  std::string file;
  std::uint64_t file_size = 0;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  std::vector<std::uint32_t> crc32c;

  friend bool operator==(const WholeChunk&, const WholeChunk&) = default;
};

struct TensorEntry {
  std::string name;
  DType dtype = DType::float32;
  std::vector<std::int64_t> shape;
  std::vector<ChunkRun> runs;
  std::optional<WholeChunk> whole;  ///< with one run of one cell: the tensor as one chunk

  friend bool operator==(const TensorEntry&, const TensorEntry&) = default;
};

/// Whether `tensor`'s runs tile its shape: one run over all of it (the common case, no
/// more to check), or its cells checked as boxes by check_tiling, whose errors it returns.
Result<void> check_tiling(const TensorEntry& tensor);

namespace detail {
class ByteWriter;
class ByteReader;
}  // namespace detail
/// A whole chunk's location as varints, without its checksum (the tensor index keeps the
/// checksums in a table of their own, so a save of an unchanged layout rewrites only
/// that table: plan caching, detail/rank_plan.hpp).
void write_whole(detail::ByteWriter& out, const WholeChunk& chunk);
/// The inverse; leaves `in.failed` set on bytes that end early.
WholeChunk read_whole(detail::ByteReader& in);

/// The global index of `tensors` (no name hash twice: merge_plans refuses such names), and
/// the param groups (`param_groups_json`, JSON text: kept here, not in the header every
/// loading rank parses, as they name every param).
/// `whole_ordinals`, if given, receives for each tensor the position of its whole chunk's
/// checksum in the index's table of them (-1 for none).
std::string encode_tensor_index(std::span<const TensorEntry> tensors, std::string_view param_groups_json,
                                std::vector<std::int64_t>* whole_ordinals = nullptr);
/// Where an encoded tensor index's table of whole chunks' checksums (4 bytes each) begins.
std::size_t tensor_index_crcs_at(std::string_view bytes);
/// ... and where its param groups begin (they run to its end).
std::size_t tensor_index_groups_at(std::string_view bytes);

/// The global index read from its bytes: the table is checked when opened, each entry
/// when it is decoded, so a lookup costs what it reads.
class TensorIndex {
 public:
  /// @returns Errc::corrupt (with `path`) when the bytes are not a tensor index, its
  ///   table leaves them or its hashes are not ascending.
  static Result<TensorIndex> open(std::string bytes, int world_size, std::uint64_t block_size, std::string path);
  /// The same over bytes that `owner` keeps alive (a mapped file).
  static Result<TensorIndex> open(std::string_view bytes, std::shared_ptr<const void> owner, int world_size,
                                  std::uint64_t block_size, std::string path);

  std::size_t size() const { return count_; }
  std::uint64_t hash(std::size_t i) const;
  std::string_view name(std::size_t i) const;
  /// The position of `name`, if the index has it.
  std::optional<std::size_t> find(std::string_view name) const { return find(name, name_hash(name)); }
  /// ... whose name_hash the caller has.
  std::optional<std::size_t> find(std::string_view name, std::uint64_t hash) const;
  /// Entry `i`, decoded and checked: a known dtype, a shape whose bytes fit, well-formed
  /// runs (run_problem) of writers within the world. @returns Errc::corrupt naming it.
  /// ... and its whole chunk, if any: a plain file name, its range inside the file and
  /// holding the shape's bytes, one checksum per `block_size` block.
  Result<TensorEntry> entry(std::size_t i) const;
  /// The param groups' JSON text, as written (not parsed: loads do not need them).
  std::string_view param_groups_json() const { return bytes_.substr(extras_at_); }

 private:
  std::shared_ptr<const void> owner_;
  std::string_view bytes_;
  std::string path_;
  int world_size_ = 0;
  std::uint64_t block_size_ = 1;
  std::size_t count_ = 0;
  std::size_t crcs_at_ = 0;
  std::size_t extras_at_ = 0;
  std::size_t names_at_ = 0;
  std::size_t bodies_at_ = 0;
};

/// One rank's index: what it wrote.
struct RankIndex {
  struct File {
    std::string name;
    std::uint64_t size = 0;
    friend bool operator==(const File&, const File&) = default;
  };
  struct Chunk {
    std::uint64_t name_hash = 0;
    Box box;
    std::uint32_t file = 0;  ///< into `files`
    std::uint64_t begin = 0;
    std::uint64_t end = 0;
    std::vector<std::uint32_t> crc32c;  ///< one per checksum block of [begin, end)
    friend bool operator==(const Chunk&, const Chunk&) = default;
  };
  int rank = 0;
  std::string save_id;
  std::vector<File> files;
  std::vector<Chunk> chunks;  ///< sorted by (name_hash, box offsets)
};

/// Sorts `index.chunks` and encodes it.
std::string encode_rank_index(RankIndex index);

/// A rank's index as a load reads it: checked whole where that is cheap (its CRC, that it
/// is rank `rank`'s of the save `save_id`, its file names, its records' extents and hash
/// order), each chunk decoded and checked only when looked up. A load needs a few of the
/// thousands of chunks each index lists; decode_rank_index decodes them all.
class RankIndexView {
 public:
  /// @returns decode_rank_index's Errc::corrupt for what it checks.
  static Result<RankIndexView> open(std::string bytes, int rank, std::string_view save_id, std::uint64_t block_size,
                                    std::string path);
  int rank() const { return rank_; }
  const std::vector<RankIndex::File>& files() const { return files_; }
  std::size_t size() const { return chunks_.size(); }
  /// Chunk `c` (< size()), decoded and checked as decode_rank_index checks it.
  Result<RankIndex::Chunk> chunk(std::size_t c) const;
  /// The chunk of the tensor `hash` whose box is `box`; nullopt when the index lists none.
  Result<std::optional<RankIndex::Chunk>> find(std::uint64_t hash, const Box& box) const;

 private:
  struct Record {
    std::uint64_t hash = 0;
    std::uint64_t at = 0;  // its first byte
  };
  /// The bytes before the CRC trailer (open checked there is one).
  std::string_view body() const { return std::string_view(bytes_).substr(0, bytes_.size() - sizeof(std::uint32_t)); }
  std::string bytes_;
  std::string path_;
  std::uint64_t block_size_ = 1;
  int rank_ = 0;
  std::string save_id_;
  std::vector<RankIndex::File> files_;
  std::vector<Record> chunks_;
};

/// Decodes and checks a rank index: its CRC, that it is rank `rank`'s of the save
/// `save_id`, plain file names, chunks in files and inside them, one checksum per
/// `block_size` block. @returns Errc::corrupt naming `path` and the problem.
Result<RankIndex> decode_rank_index(std::string_view bytes, int rank, std::string_view save_id,
                                    std::uint64_t block_size, const std::string& path);

}  // namespace corockpt
