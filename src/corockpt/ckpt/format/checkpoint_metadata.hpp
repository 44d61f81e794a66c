#pragma once
/// @file
/// The checkpoint's metadata file, `corockpt.metadata.json` at the top of the checkpoint
/// directory, written last by the coordinator: the authority on what the checkpoint
/// holds. For every tensor name (an FQN, or `state.<fqn>.<state>` for optimizer states)
/// its dtype, global shape and every chunk: its box, the data file, the byte range in
/// that file and the CRC-32C of each `block_size` block of the range (from its start;
/// the last block may be short), so a partial read is checked too.
///
/// ```json
/// {"format": "corockpt", "version": 1, "world_size": 8,
///  "meshes": [{"name": "dp_ep", "shape": [2, 4], "dim_names": ["dp", "ep"]}],
///  "block_size": 1048576,
///  "files": {"rank00000-000.safetensors": 123456, ...},
///  "tensors": {"layer.weight": {"dtype": "float32", "shape": [16, 8],
///       "chunks": [{"offsets": [0, 0], "sizes": [8, 8], "file": "rank00000-000.safetensors",
///                   "begin": 128, "end": 384, "crc32c": [3735928559]}]}},
///  "param_groups": [...], "user": {...},
///  "objects": {"optim.param_groups.0.lr": {"file": "rank00000-objects.bin", "begin": 0,
///       "end": 1261, "crc32c": [4023233417]}}}
/// ```
///
/// `objects` (format version 2) are values that are not tensors, stored whole as the bytes
/// their writer gave (PyTorch DCP's pickled leaves: param_groups, counters).
///
/// Format version 3, which saves write since thousands of ranks had to be planned, moves
/// "tensors", the data files' sizes and the param groups (which name every param) out
/// of the JSON into binary indexes (chunk_index.hpp): the header says where the tensor
/// index is instead, and "files" lists only the files of objects.
///
/// ```json
/// {"format": "corockpt", "version": 3, "world_size": 8, "meshes": [...], "block_size": 1048576,
///  "index": {"file": "corockpt.index.bin", "size": 4711, "crc32c": 123, "save_id": "5f0c..."},
///  "files": {}, "user": {...}}
/// ```
///
/// In memory, CheckpointMetadata is the version 1/2 view (every tensor with its chunks):
/// read_checkpoint_metadata (checkpoint_reader.hpp) fills it from the indexes, and
/// to_json_text writes it as a version 1/2 document (`corockpt inspect --json`) unless
/// `index` is set.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "corockpt/ckpt/box.hpp"
#include "corockpt/ckpt/dtype.hpp"
#include "corockpt/ckpt/model_spec.hpp"
#include "corockpt/runtime/error.hpp"

namespace corockpt {

/// The newest version this build reads and saves write (3); to_json_text writes 1 or 2
/// for metadata without an index.
inline constexpr int checkpoint_format_version = 3;
inline constexpr std::string_view checkpoint_metadata_file = "corockpt.metadata.json";
/// The default checksum block: small enough that a partial read checks little extra.
inline constexpr std::uint64_t default_checksum_block = 1 << 20;

struct ChunkRecord {
  Box box;
  std::string file;  ///< a plain file name in the checkpoint directory
  std::uint64_t begin = 0;  ///< absolute byte offsets in `file`
  std::uint64_t end = 0;
  std::vector<std::uint32_t> crc32c;  ///< one per block_size block of [begin, end)

  friend bool operator==(const ChunkRecord&, const ChunkRecord&) = default;
};

struct TensorRecord {
  DType dtype = DType::float32;
  std::vector<std::int64_t> shape;
  std::vector<ChunkRecord> chunks;

  friend bool operator==(const TensorRecord&, const TensorRecord&) = default;
};

/// A value that is not a tensor: bytes [begin, end) of `file`, checksummed as a chunk is.
struct ObjectRecord {
  std::string file;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  std::vector<std::uint32_t> crc32c;

  friend bool operator==(const ObjectRecord&, const ObjectRecord&) = default;
};

/// Where a version 3 checkpoint's tensor index is, and the save that wrote it.
struct IndexRecord {
  std::string file;
  std::uint64_t size = 0;
  std::uint32_t crc32c = 0;
  std::string save_id;  ///< every rank index of the save carries it

  friend bool operator==(const IndexRecord&, const IndexRecord&) = default;
};

struct CheckpointMetadata {
  /// The version read; writing always uses the oldest that holds the content (1, or 2
  /// with objects).
  int version = checkpoint_format_version;
  int world_size = 0;
  std::vector<MeshSpec> meshes;
  std::uint64_t block_size = default_checksum_block;
  std::map<std::string, std::uint64_t> files;  ///< data file name -> size in bytes
  std::map<std::string, TensorRecord> tensors;
  nlohmann::json param_groups = nlohmann::json::array();
  nlohmann::json user = nlohmann::json::object();
  std::map<std::string, ObjectRecord> objects;
  /// Version 3's header: the tensors are in the indexes (until a reader fills them in).
  std::optional<IndexRecord> index;
  /// Read for a load: only its targets' tensors and the chunks they overlap, whose
  /// tiling the reader checked from the index's runs.
  bool partial = false;
};

/// The most the "user" blob may take as JSON text (16 MiB). It is for small things (step,
/// data-loader position, RNG seeds); every rank of a load parses it, so a large one costs
/// every load time and memory. Larger state belongs in tensors or objects.
inline constexpr std::size_t max_user_blob_bytes = std::size_t{16} << 20;

/// Errc::invalid_argument unless `user` is an object of at most max_user_blob_bytes as
/// JSON text, the message giving its size.
Result<void> check_user_blob(const nlohmann::json& user);

/// The number of checksum blocks of a range of `bytes` bytes (0 for an empty range).
/// Precondition (checked; a violation aborts): block_size > 0.
std::uint64_t checksum_blocks(std::uint64_t bytes, std::uint64_t block_size);

/// True for a name a data file may have: not empty, no '/', not "." or "..", no NUL,
/// not the metadata file's name. (So metadata can never point outside the directory.)
bool is_plain_file_name(std::string_view name);

/// Compact JSON with keys in the order of the examples above, ending in a newline: the
/// version 3 header when `index` is set (no tensors), else version 1 or 2.
/// Strings that are not UTF-8 are written with U+FFFD in place of the invalid bytes.
std::string to_json_text(const CheckpointMetadata& metadata);

/// Parses and validates metadata text, every error naming the tensor (and file) it is
/// about: Errc::corrupt for malformed JSON, missing or mistyped keys, an unknown dtype, a
/// file name that is not plain (`../x`, `/abs`), a chunk whose file is not in `files`,
/// begin > end or end past the file's recorded size, a box whose ndim differs from the
/// shape or that leaves the shape, a byte range whose length is not the box's bytes, a
/// wrong number of checksums, block_size 0; Errc::unavailable for a version newer than
/// checkpoint_format_version ("written by a newer corockpt"). Does not check tiling, nor meshes against world_size.
/// Also Errc::corrupt: "format" other than "corockpt", a version below 1, unknown keys
/// (at every level), a key repeated in an object, world_size < 1, a mesh whose shape
/// is not positive or whose dim_names do not match it, "param_groups" not a list or
/// "user" not an object or larger than max_user_blob_bytes, a shape whose size does not fit int64, a checksum that is not a
/// 32-bit unsigned integer. Chunks with no elements are valid (begin == end, no checksums).
Result<CheckpointMetadata> parse_checkpoint_metadata(std::string_view text);

/// Whether `record`'s chunks tile its shape exactly: no two overlap and together they
/// cover every element (empty chunks are ignored; a 0-d tensor is tiled by one chunk of
/// offsets [] and sizes []). Fast for thousands of chunks (a sweep along the dim in
/// which they are cut most finely), implemented in chunk_tiling.cpp. @returns
/// Errc::corrupt naming `name` and the overlapping boxes, the number of elements not
/// covered, or a box that leaves the shape.
Result<void> check_tiling(const std::string& name, const TensorRecord& record);

}  // namespace corockpt
