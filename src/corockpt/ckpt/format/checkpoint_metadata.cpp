#include "corockpt/ckpt/format/checkpoint_metadata.hpp"

#include <algorithm>
#include <exception>
#include <functional>
#include <initializer_list>
#include <limits>
#include <optional>

#include "corockpt/ckpt/detail/expects.hpp"
#include "corockpt/ckpt/format/checked_size.hpp"
#include "corockpt/ckpt/format/json_writing.hpp"
#include "corockpt/ckpt/format/strict_json.hpp"

namespace corockpt {

namespace {

using Json = nlohmann::json;
using detail::excerpt;
using detail::list_text;
using detail::quoted_text;

constexpr std::string_view kFormatName = "corockpt";

// Every message starts with where in the file the problem is: "metadata: tensor "w"
// chunk 2: ...". Errors about a tensor carry its name as context too.
Error corrupt(const std::string& where, const std::string& what, const std::string& tensor = {}) {
  Error e{Errc::corrupt, "metadata: " + where + (where.empty() ? "" : ": ") + what, {}, 0};
  if (!tensor.empty()) e.with_fqn(tensor);
  return e;
}

// Appended rather than `"\"" + std::string(key)`, which GCC 12 at -O3 falsely reports
// under -Wrestrict (GCC bug 105329).
std::string key_where(std::string_view key) {
  std::string out = "\"";
  out += key;
  out += '"';
  return out;
}

// What is wrong with an object that must have exactly `keys`, or nothing.
/// What is wrong with `object`'s keys: one not in `keys` or `optional`, or one of `keys`
/// missing.
std::optional<std::string> key_problem(const Json& object, std::initializer_list<std::string_view> keys,
                                       std::initializer_list<std::string_view> optional = {}) {
  if (!object.is_object()) return std::string("must be an object, got ") + object.type_name();
  std::string known;
  for (auto k : keys) known += (known.empty() ? "" : ", ") + std::string(k);
  for (auto k : optional) known += (known.empty() ? "" : ", ") + std::string(k);
  for (const auto& [key, _] : object.items()) {
    if (std::find(keys.begin(), keys.end(), key) == keys.end() &&
        std::find(optional.begin(), optional.end(), key) == optional.end()) {
      return "unknown key " + quoted_text(key) + " (known: " + known + ")";
    }
  }
  for (auto k : keys) {
    if (!object.contains(k)) return "missing \"" + std::string(k) + "\"";
  }
  return std::nullopt;
}

std::string dtype_problem(const std::string& name, const Error& parse_error) {
  // parse_dtype's message lists the known names; a huge name is cut short.
  return name.size() <= 64 ? parse_error.message : "unknown dtype " + quoted_text(name);
}

// --- reading ---------------------------------------------------------------------

Result<std::vector<MeshSpec>> read_meshes(const Json& value) {
  if (!value.is_array()) return fail(corrupt(key_where("meshes"), std::string("must be a list, got ") + value.type_name()));
  std::vector<MeshSpec> meshes;
  for (std::size_t i = 0; i < value.size(); ++i) {
    const Json& item = value[i];
    const std::string where = "mesh " + std::to_string(i);
    if (auto problem = key_problem(item, {"name", "shape", "dim_names"})) return fail(corrupt(where, *problem));
    MeshSpec mesh;
    if (!item["name"].is_string()) return fail(corrupt(where, "\"name\" must be a string, got " + excerpt(item["name"])));
    mesh.name = item["name"].get<std::string>();
    auto shape = detail::as_int64_list(item["shape"]);
    if (!shape || std::any_of(shape->begin(), shape->end(), [](std::int64_t s) { return s < 1; })) {
      return fail(corrupt(where, "\"shape\" must be a list of positive integers, got " + excerpt(item["shape"])));
    }
    mesh.shape = std::move(*shape);
    const Json& names = item["dim_names"];
    if (!names.is_array() || names.size() != mesh.shape.size() ||
        !std::all_of(names.begin(), names.end(), [](const Json& n) { return n.is_string(); })) {
      return fail(corrupt(where, "\"dim_names\" must be a list of " + std::to_string(mesh.shape.size()) +
                                     " strings, one per mesh dim, got " + excerpt(names)));
    }
    for (const auto& n : names) mesh.dim_names.push_back(n.get<std::string>());
    meshes.push_back(std::move(mesh));
  }
  return meshes;
}

Result<std::map<std::string, std::uint64_t>> read_files(const Json& value) {
  if (!value.is_object()) return fail(corrupt(key_where("files"), std::string("must be an object, got ") + value.type_name()));
  std::map<std::string, std::uint64_t> files;
  for (const auto& [name, size] : value.items()) {
    const std::string where = "file " + quoted_text(name);
    if (!is_plain_file_name(name)) return fail(corrupt(where, "is not a plain file name in the checkpoint directory"));
    const auto bytes = detail::as_uint64(size);
    if (!bytes) return fail(corrupt(where, "its size must be a non-negative integer, got " + excerpt(size)));
    files.emplace(name, *bytes);
  }
  return files;
}

/// Reads the `file`, `begin`, `end` and `crc32c` of a chunk or an object into `stored`
/// and checks them against the file list and the block size; `check_length`, if given,
/// names what is wrong with the range's length.
template <class Stored>
Result<void> read_stored_range(const std::string& name, const std::string& where, const Json& value,
                               const CheckpointMetadata& metadata, Stored& stored,
                               const std::function<std::optional<std::string>(std::uint64_t)>& check_length) {
  const Json& file = value["file"];
  if (!file.is_string()) return fail(corrupt(where, "\"file\" must be a string, got " + excerpt(file), name));
  stored.file = file.get<std::string>();
  if (!is_plain_file_name(stored.file)) {
    return fail(corrupt(where, "file " + quoted_text(stored.file) + " is not a plain file name in the checkpoint directory", name));
  }
  const auto listed = metadata.files.find(stored.file);
  if (listed == metadata.files.end()) {
    return fail(corrupt(where, "file " + quoted_text(stored.file) + " is not listed in \"files\"", name));
  }

  const auto begin = detail::as_uint64(value["begin"]);
  const auto end = detail::as_uint64(value["end"]);
  if (!begin || !end) {
    return fail(corrupt(where, "\"begin\" and \"end\" must be non-negative integers, got " + excerpt(value["begin"]) +
                                   " and " + excerpt(value["end"]), name));
  }
  stored.begin = *begin;
  stored.end = *end;
  const std::string range = "bytes [" + std::to_string(stored.begin) + ", " + std::to_string(stored.end) + ")";
  if (stored.begin > stored.end) return fail(corrupt(where, range + " end before they begin", name));
  if (stored.end > listed->second) {
    return fail(corrupt(where, range + " run past the end of file " + quoted_text(stored.file) + " (" +
                                   std::to_string(listed->second) + " bytes)", name));
  }
  if (check_length) {
    if (auto problem = check_length(stored.end - stored.begin)) return fail(corrupt(where, range + " " + *problem, name));
  }

  const Json& checksums = value["crc32c"];
  if (!checksums.is_array()) {
    return fail(corrupt(where, "\"crc32c\" must be a list of checksums, got " + excerpt(checksums), name));
  }
  const std::uint64_t expected = checksum_blocks(stored.end - stored.begin, metadata.block_size);
  if (checksums.size() != expected) {
    return fail(corrupt(where, std::to_string(checksums.size()) + " checksums for " + std::to_string(expected) +
                                   " blocks of " + std::to_string(metadata.block_size) + " bytes", name));
  }
  stored.crc32c.reserve(checksums.size());
  for (const auto& c : checksums) {
    const auto crc = detail::as_uint64(c);
    if (!crc || *crc > std::numeric_limits<std::uint32_t>::max()) {
      return fail(corrupt(where, "a checksum must be a 32-bit unsigned integer, got " + excerpt(c), name));
    }
    stored.crc32c.push_back(static_cast<std::uint32_t>(*crc));
  }
  return {};
}

Result<ChunkRecord> read_chunk(const std::string& tensor, const std::string& where, const Json& value,
                               const TensorRecord& record, const CheckpointMetadata& metadata) {
  if (auto problem = key_problem(value, {"offsets", "sizes", "file", "begin", "end", "crc32c"})) {
    return fail(corrupt(where, *problem, tensor));
  }
  ChunkRecord chunk;
  auto offsets = detail::as_int64_list(value["offsets"]);
  auto sizes = detail::as_int64_list(value["sizes"]);
  if (!offsets || !sizes) {
    return fail(corrupt(where, "\"offsets\" and \"sizes\" must be lists of integers, got " +
                                   excerpt(value["offsets"]) + " and " + excerpt(value["sizes"]), tensor));
  }
  chunk.box = Box{std::move(*offsets), std::move(*sizes)};
  const Box& box = chunk.box;
  const std::size_t ndim = record.shape.size();
  if (box.offsets.size() != ndim || box.sizes.size() != ndim) {
    return fail(corrupt(where, "box " + box.to_string() + " does not have the " + std::to_string(ndim) +
                                   " dims of shape " + list_text(record.shape), tensor));
  }
  for (std::size_t d = 0; d < ndim; ++d) {
    // Written so nothing overflows: offset + size <= extent as offset <= extent - size.
    const bool inside = box.offsets[d] >= 0 && box.sizes[d] >= 0 && box.sizes[d] <= record.shape[d] &&
                        box.offsets[d] <= record.shape[d] - box.sizes[d];
    if (!inside) {
      return fail(corrupt(where, "box " + box.to_string() + " leaves shape " + list_text(record.shape), tensor));
    }
  }

  // The box lies inside a shape whose element count fits, so its own count does too.
  auto length_of_box = [&](std::uint64_t length) -> std::optional<std::string> {
    const auto bytes = detail::checked_bytes(box.sizes, record.dtype);
    if (bytes && *bytes == length) return std::nullopt;
    return "hold " + std::to_string(length) + " bytes, but box " + box.to_string() + " of " +
           std::string(to_string(record.dtype)) + " needs " + (bytes ? std::to_string(*bytes) : "more");
  };
  if (auto ok = read_stored_range(tensor, where, value, metadata, chunk, length_of_box); !ok) return fail(ok.error());
  return chunk;
}

Result<TensorRecord> read_tensor(const std::string& name, const Json& value, const CheckpointMetadata& metadata) {
  const std::string where = "tensor " + quoted_text(name);
  if (auto problem = key_problem(value, {"dtype", "shape", "chunks"})) return fail(corrupt(where, *problem, name));
  TensorRecord record;
  const Json& dtype = value["dtype"];
  if (!dtype.is_string()) return fail(corrupt(where, "\"dtype\" must be a string, got " + excerpt(dtype), name));
  auto parsed = parse_dtype(dtype.get<std::string>());
  if (!parsed) return fail(corrupt(where, dtype_problem(dtype.get<std::string>(), parsed.error()), name));
  record.dtype = *parsed;

  auto shape = detail::as_int64_list(value["shape"]);
  if (!shape || std::any_of(shape->begin(), shape->end(), [](std::int64_t s) { return s < 0; })) {
    return fail(corrupt(where, "\"shape\" must be a list of non-negative integers, got " + excerpt(value["shape"]), name));
  }
  record.shape = std::move(*shape);
  if (!detail::checked_bytes(record.shape, record.dtype)) {
    return fail(corrupt(where, "shape " + list_text(record.shape) + " is too large", name));
  }

  const Json& chunks = value["chunks"];
  if (!chunks.is_array()) return fail(corrupt(where, std::string("\"chunks\" must be a list, got ") + chunks.type_name(), name));
  record.chunks.reserve(chunks.size());
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    auto chunk = read_chunk(name, where + " chunk " + std::to_string(i), chunks[i], record, metadata);
    if (!chunk) return fail(chunk.error());
    record.chunks.push_back(std::move(*chunk));
  }
  return record;
}

Result<IndexRecord> read_index(const Json& value) {
  const std::string where = key_where("index");
  if (auto problem = key_problem(value, {"file", "size", "crc32c", "save_id"})) return fail(corrupt(where, *problem));
  IndexRecord index;
  if (!value["file"].is_string() || !is_plain_file_name(value["file"].get<std::string>())) {
    return fail(corrupt(where, "\"file\" must be a plain file name in the checkpoint directory, got " + excerpt(value["file"])));
  }
  index.file = value["file"].get<std::string>();
  const auto size = detail::as_uint64(value["size"]);
  const auto crc = detail::as_uint64(value["crc32c"]);
  if (!size || !crc || *crc > std::numeric_limits<std::uint32_t>::max()) {
    return fail(corrupt(where, "\"size\" must be a non-negative integer and \"crc32c\" a 32-bit one, got " +
                                   excerpt(value["size"]) + " and " + excerpt(value["crc32c"])));
  }
  index.size = *size;
  index.crc32c = static_cast<std::uint32_t>(*crc);
  if (!value["save_id"].is_string()) return fail(corrupt(where, "\"save_id\" must be a string, got " + excerpt(value["save_id"])));
  index.save_id = value["save_id"].get<std::string>();
  return index;
}

Result<CheckpointMetadata> read_metadata(std::string_view text) {
  // A user blob past its bound is refused before any of the document is built.
  auto parsed = detail::parse_strict_json(text, {.key = "user", .max_bytes = max_user_blob_bytes});
  if (!parsed) return fail(corrupt("", parsed.error().message));
  const Json& root = *parsed;
  if (!root.is_object()) return fail(corrupt("", std::string("must be a JSON object, got ") + root.type_name()));

  // What the file is and which version wrote it come first: a newer version may differ
  // in everything else, and must be reported as newer, not as corrupt.
  const auto format = root.find("format");
  if (format == root.end() || !format->is_string() || format->get_ref<const std::string&>() != kFormatName) {
    return fail(corrupt("", "not a corockpt metadata file (\"format\" must be \"corockpt\")"));
  }
  const auto version_value = root.find("version");
  const auto version = version_value == root.end() ? std::nullopt : detail::as_int64(*version_value);
  if (!version || *version < 1) {
    return fail(corrupt(key_where("version"), "must be a positive integer, got " +
                                                  (version_value == root.end() ? "nothing" : excerpt(*version_value))));
  }
  if (*version > checkpoint_format_version) {
    return fail(Errc::unavailable, "metadata: written by a newer corockpt (format version " + std::to_string(*version) +
                                       "; this build reads versions up to " +
                                       std::to_string(checkpoint_format_version) + ")");
  }
  const bool indexed = *version >= 3;  // tensors in the binary indexes, not here
  if (auto problem = indexed ? key_problem(root, {"format", "version", "world_size", "meshes", "block_size", "index",
                                                  "files", "user"},
                                           {"objects"})
                             : key_problem(root, {"format", "version", "world_size", "meshes", "block_size", "files",
                                                  "tensors", "param_groups", "user"},
                                           {"objects"})) {
    return fail(corrupt("", *problem));
  }

  CheckpointMetadata metadata;
  metadata.version = static_cast<int>(*version);
  const auto world_size = detail::as_int64(root["world_size"]);
  if (!world_size || *world_size < 1 || *world_size > std::numeric_limits<int>::max()) {
    return fail(corrupt(key_where("world_size"), "must be a positive integer, got " + excerpt(root["world_size"])));
  }
  metadata.world_size = static_cast<int>(*world_size);

  auto meshes = read_meshes(root["meshes"]);
  if (!meshes) return fail(meshes.error());
  metadata.meshes = std::move(*meshes);

  const auto block_size = detail::as_uint64(root["block_size"]);
  if (!block_size || *block_size == 0) {
    return fail(corrupt(key_where("block_size"), "must be a positive integer, got " + excerpt(root["block_size"])));
  }
  metadata.block_size = *block_size;

  auto files = read_files(root["files"]);
  if (!files) return fail(files.error());
  metadata.files = std::move(*files);

  if (indexed) {
    auto index = read_index(root["index"]);
    if (!index) return fail(index.error());
    metadata.index = std::move(*index);
  } else {
    const Json& tensors = root["tensors"];
    if (!tensors.is_object()) {
      return fail(corrupt(key_where("tensors"), std::string("must be an object, got ") + tensors.type_name()));
    }
    for (const auto& [name, value] : tensors.items()) {
      auto record = read_tensor(name, value, metadata);
      if (!record) return fail(record.error());
      metadata.tensors.emplace(name, std::move(*record));
    }
  }

  if (!indexed) {  // version 3 keeps them in the tensor index
    if (!root["param_groups"].is_array()) {
      return fail(corrupt(key_where("param_groups"), std::string("must be a list, got ") + root["param_groups"].type_name()));
    }
    metadata.param_groups = root["param_groups"];
  }
  if (auto bounded = check_user_blob(root["user"]); !bounded) {
    return fail(corrupt(key_where("user"), bounded.error().message));
  }
  metadata.user = root["user"];

  if (const auto objects = root.find("objects"); objects != root.end()) {
    if (!objects->is_object()) {
      return fail(corrupt(key_where("objects"), std::string("must be an object, got ") + objects->type_name()));
    }
    for (const auto& [name, value] : objects->items()) {
      const std::string where = "object " + quoted_text(name);
      if (auto problem = key_problem(value, {"file", "begin", "end", "crc32c"})) return fail(corrupt(where, *problem, name));
      ObjectRecord record;
      if (auto ok = read_stored_range(name, where, value, metadata, record, {}); !ok) return fail(ok.error());
      if (metadata.tensors.contains(name)) return fail(corrupt(where, "has the name of a tensor", name));
      metadata.objects.emplace(name, std::move(record));
    }
  }
  return metadata;
}

// --- writing ---------------------------------------------------------------------

std::string tensor_text(const TensorRecord& record) {
  nlohmann::ordered_json chunks = nlohmann::ordered_json::array();
  for (const auto& c : record.chunks) {
    chunks.push_back({{"offsets", c.box.offsets},
                      {"sizes", c.box.sizes},
                      {"file", c.file},
                      {"begin", c.begin},
                      {"end", c.end},
                      {"crc32c", c.crc32c}});
  }
  return detail::json_text(
      nlohmann::ordered_json{{"dtype", to_string(record.dtype)}, {"shape", record.shape}, {"chunks", std::move(chunks)}});
}

}  // namespace

std::uint64_t checksum_blocks(std::uint64_t bytes, std::uint64_t block_size) {
  detail::expects(block_size > 0, "checksum_blocks: block_size must be positive");
  return bytes / block_size + (bytes % block_size != 0 ? 1 : 0);
}

bool is_plain_file_name(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos && name != checkpoint_metadata_file;
}

std::string to_json_text(const CheckpointMetadata& metadata) {
  nlohmann::ordered_json meshes = nlohmann::ordered_json::array();
  for (const auto& m : metadata.meshes) {
    meshes.push_back({{"name", m.name}, {"shape", m.shape}, {"dim_names", m.dim_names}});
  }
  detail::JsonObjectWriter tensors;
  for (const auto& [name, record] : metadata.tensors) tensors.add_text(name, tensor_text(record));

  // The order of the header's example: what the file is first, the bulk (tensors) last
  // but for the small groups and the user's blob.
  detail::JsonObjectWriter root;
  root.add("format", Json(kFormatName));
  // Without an index, the oldest version that holds the content, so builds before
  // objects read the rest.
  root.add("version", Json(metadata.index ? 3 : metadata.objects.empty() ? 1 : 2));
  root.add("world_size", Json(metadata.world_size));
  root.add("meshes", meshes);
  root.add("block_size", Json(metadata.block_size));
  if (metadata.index) {
    const IndexRecord& index = *metadata.index;
    root.add("index", nlohmann::ordered_json{
                          {"file", index.file}, {"size", index.size}, {"crc32c", index.crc32c}, {"save_id", index.save_id}});
  }
  root.add("files", Json(metadata.files));  // a std::map: sorted, like the object it becomes
  if (!metadata.index) root.add_text("tensors", std::move(tensors).finish());
  if (!metadata.index) root.add("param_groups", metadata.param_groups);
  root.add("user", metadata.user);
  if (!metadata.objects.empty()) {
    nlohmann::ordered_json objects = nlohmann::ordered_json::object();
    for (const auto& [name, o] : metadata.objects) {
      objects[name] = {{"file", o.file}, {"begin", o.begin}, {"end", o.end}, {"crc32c", o.crc32c}};
    }
    root.add("objects", objects);
  }
  return std::move(root).finish() + "\n";
}

Result<void> check_user_blob(const Json& user) {
  if (!user.is_object()) {
    return fail(Errc::invalid_argument, std::string("the user blob must be a JSON object, got ") + user.type_name());
  }
  const std::size_t bytes = user.dump().size();
  if (bytes > max_user_blob_bytes) {
    return fail(Errc::invalid_argument,
                "the user blob is " + std::to_string(bytes) + " bytes as JSON, more than the " +
                    std::to_string(max_user_blob_bytes) +
                    " (16 MiB) a checkpoint's may hold; keep larger state in tensors or objects");
  }
  return {};
}

Result<CheckpointMetadata> parse_checkpoint_metadata(std::string_view text) {
  try {
    return read_metadata(text);
  } catch (...) {  // nothing above should throw (bad_alloc aside); if it does, it stays inside
    return fail(error_from_exception(std::current_exception()));
  }
}

}  // namespace corockpt
