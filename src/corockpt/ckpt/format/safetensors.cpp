#include "corockpt/ckpt/format/safetensors.hpp"

#include <algorithm>
#include <exception>
#include <optional>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "corockpt/ckpt/detail/expects.hpp"
#include "corockpt/ckpt/format/checked_size.hpp"
#include "corockpt/ckpt/format/json_writing.hpp"
#include "corockpt/ckpt/format/strict_json.hpp"

namespace corockpt {

namespace {

using Json = nlohmann::json;
using detail::quoted_text;

constexpr std::string_view kMetadataKey = "__metadata__";
constexpr std::uint64_t kLengthBytes = 8;

Error header_error(std::string what) {
  return Error{Errc::corrupt, "safetensors header: " + std::move(what), {}, 0};
}

Error tensor_error(const std::string& name, std::string what) {
  Error e{Errc::corrupt, "safetensors header: tensor " + quoted_text(name) + ": " + std::move(what), {}, 0};
  return e.with_fqn(name);
}

std::string range_text(std::uint64_t begin, std::uint64_t end) {
  // Appended rather than `"[" + std::to_string(...)`, which GCC 12 at -O3 falsely
  // reports under -Wrestrict (GCC bug 105329).
  std::string out = "[";
  out += std::to_string(begin);
  out += ", ";
  out += std::to_string(end);
  out += ')';
  return out;
}

Result<SafetensorsEntry> read_entry(const std::string& name, const Json& value, std::uint64_t data_capacity) {
  if (!value.is_object()) {
    return fail(tensor_error(name, std::string("must be an object with dtype, shape and data_offsets, got ") +
                                       value.type_name()));
  }
  for (const auto& [key, _] : value.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return fail(tensor_error(name, "unknown key " + quoted_text(key) + " (known: dtype, shape, data_offsets)"));
    }
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!value.contains(key)) return fail(tensor_error(name, std::string("missing \"") + key + "\""));
  }

  SafetensorsEntry entry;
  entry.name = name;
  const Json& dtype = value["dtype"];
  if (!dtype.is_string()) return fail(tensor_error(name, std::string("dtype must be a string, got ") + dtype.type_name()));
  auto parsed_dtype = parse_safetensors_dtype(dtype.get<std::string>());
  if (!parsed_dtype) {
    // parse_safetensors_dtype's message lists the known names; a huge name is cut short.
    const bool short_name = dtype.get_ref<const std::string&>().size() <= 64;
    return fail(tensor_error(name, short_name ? parsed_dtype.error().message
                                              : "unknown dtype " + quoted_text(dtype.get<std::string>())));
  }
  entry.dtype = *parsed_dtype;

  auto shape = detail::as_int64_list(value["shape"]);
  if (!shape || std::any_of(shape->begin(), shape->end(), [](std::int64_t s) { return s < 0; })) {
    return fail(tensor_error(name, "shape must be a list of non-negative integers, got " + detail::excerpt(value["shape"])));
  }
  entry.shape = std::move(*shape);
  const auto bytes = detail::checked_bytes(entry.shape, entry.dtype);
  if (!bytes) return fail(tensor_error(name, "shape " + detail::list_text(entry.shape) + " is too large"));

  const Json& offsets = value["data_offsets"];
  std::optional<std::uint64_t> begin, end;
  if (offsets.is_array() && offsets.size() == 2) {
    begin = detail::as_uint64(offsets[0]);
    end = detail::as_uint64(offsets[1]);
  }
  if (!begin || !end) {
    return fail(tensor_error(name, "data_offsets must be [begin, end], two non-negative integers, got " + detail::excerpt(offsets)));
  }
  entry.begin = *begin;
  entry.end = *end;
  if (entry.begin > entry.end) {
    return fail(tensor_error(name, "data_offsets " + range_text(entry.begin, entry.end) + " end before they begin"));
  }
  if (entry.end - entry.begin != *bytes) {
    return fail(tensor_error(name, "data_offsets " + range_text(entry.begin, entry.end) + " hold " +
                                       std::to_string(entry.end - entry.begin) + " bytes, but " +
                                       std::string(safetensors_name(entry.dtype)) + " " +
                                       detail::list_text(entry.shape) + " needs " + std::to_string(*bytes)));
  }
  if (entry.end > data_capacity) {
    return fail(tensor_error(name, "data_offsets " + range_text(entry.begin, entry.end) +
                                       " run past the end of the file (" + std::to_string(data_capacity) +
                                       " bytes follow the header)"));
  }
  return entry;
}

Result<std::map<std::string, std::string>> read_metadata(const Json& value) {
  if (!value.is_object()) {
    return fail(header_error(std::string("__metadata__ must be an object of strings, got ") + value.type_name()));
  }
  std::map<std::string, std::string> out;
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string()) {
      return fail(header_error("__metadata__ " + quoted_text(key) + " must be a string, got " + item.type_name()));
    }
    out.emplace(key, item.get<std::string>());
  }
  return out;
}

// Entries sorted by their bytes must follow one another from 0, each where the last
// non-empty one ended (empty tensors sit anywhere on that chain, holding no bytes).
Result<std::uint64_t> check_packed(const std::vector<SafetensorsEntry>& sorted) {
  std::uint64_t next = 0;
  const SafetensorsEntry* last_filled = nullptr;
  for (const auto& e : sorted) {
    if (e.begin < next) {
      return fail(tensor_error(e.name, "bytes " + range_text(e.begin, e.end) + " overlap tensor " +
                                           quoted_text(last_filled->name) + "'s " +
                                           range_text(last_filled->begin, last_filled->end)));
    }
    if (e.begin > next) {
      return fail(tensor_error(e.name, "bytes " + range_text(next, e.begin) +
                                           " before it belong to no tensor (data must be packed)"));
    }
    next = e.end;
    if (e.end > e.begin) last_filled = &e;
  }
  return next;
}

Result<SafetensorsHeader> parse_header(std::span<const std::byte> json, std::uint64_t file_size) {
  SafetensorsHeader header;
  header.data_offset = kLengthBytes + json.size();
  if (header.data_offset > file_size) {
    return fail(header_error("the header (" + std::to_string(header.data_offset) + " bytes) is longer than the file (" +
                             std::to_string(file_size) + " bytes)"));
  }
  const std::uint64_t data_capacity = file_size - header.data_offset;

  auto root = detail::parse_strict_json(std::string_view(reinterpret_cast<const char*>(json.data()), json.size()));
  if (!root) return fail(header_error(root.error().message));
  if (!root->is_object()) return fail(header_error(std::string("must be a JSON object, got ") + root->type_name()));

  for (const auto& [key, value] : root->items()) {
    if (key == kMetadataKey) {
      auto metadata = read_metadata(value);
      if (!metadata) return fail(metadata.error());
      header.metadata = std::move(*metadata);
      continue;
    }
    auto entry = read_entry(key, value, data_capacity);
    if (!entry) return fail(entry.error());
    header.entries.push_back(std::move(*entry));
  }

  std::sort(header.entries.begin(), header.entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  auto data_bytes = check_packed(header.entries);
  if (!data_bytes) return fail(data_bytes.error());
  header.data_bytes = *data_bytes;
  return header;
}

}  // namespace

std::string encode_safetensors_header(const std::vector<SafetensorsEntry>& entries,
                                      const std::map<std::string, std::string>& metadata) {
  detail::JsonObjectWriter object;
  if (!metadata.empty()) object.add(kMetadataKey, Json(metadata));
  std::set<std::string_view> names;
  std::uint64_t next = 0;
  for (const auto& e : entries) {
    detail::expects(e.name != kMetadataKey, "encode_safetensors_header: a tensor may not be named __metadata__");
    detail::expects(names.insert(e.name).second, "encode_safetensors_header: tensor names must be unique");
    detail::expects(e.begin == next && e.end >= e.begin,
                    "encode_safetensors_header: entries must be packed, the first at 0, each next at the previous end");
    const auto bytes = detail::checked_bytes(e.shape, e.dtype);
    detail::expects(bytes && *bytes == e.end - e.begin,
                    "encode_safetensors_header: data_offsets must span the bytes of dtype x shape");
    next = e.end;
    object.add(e.name, nlohmann::ordered_json{{"dtype", safetensors_name(e.dtype)},
                                              {"shape", e.shape},
                                              {"data_offsets", {e.begin, e.end}}});
  }
  std::string json = std::move(object).finish();

  // Spaces after the JSON put the first data byte at a multiple of 8.
  json.append((8 - (kLengthBytes + json.size()) % 8) % 8, ' ');
  std::string out(kLengthBytes, '\0');
  const std::uint64_t length = json.size();
  for (std::size_t i = 0; i < kLengthBytes; ++i) out[i] = static_cast<char>((length >> (8 * i)) & 0xFF);
  return out + json;
}

Result<std::uint64_t> parse_safetensors_header_length(std::span<const std::byte> first8, std::uint64_t file_size) {
  if (first8.size() < kLengthBytes) {
    return fail(header_error("the file starts with " + std::to_string(first8.size()) +
                             " bytes, fewer than the 8-byte header length"));
  }
  std::uint64_t length = 0;
  for (std::size_t i = 0; i < kLengthBytes; ++i) length |= std::to_integer<std::uint64_t>(first8[i]) << (8 * i);
  if (length > max_safetensors_header_bytes) {
    return fail(header_error("header length " + std::to_string(length) + " exceeds the limit of " +
                             std::to_string(max_safetensors_header_bytes) + " bytes"));
  }
  if (kLengthBytes + length > file_size) {
    return fail(header_error("header length " + std::to_string(length) + " runs past the end of the file (" +
                             std::to_string(file_size) + " bytes)"));
  }
  return length;
}

Result<SafetensorsHeader> parse_safetensors_header(std::span<const std::byte> json, std::uint64_t file_size) {
  try {
    return parse_header(json, file_size);
  } catch (...) {  // nothing above should throw (bad_alloc aside); if it does, it stays inside
    return fail(error_from_exception(std::current_exception()));
  }
}

}  // namespace corockpt
