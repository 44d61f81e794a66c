#include "corockpt/ckpt/format/safetensors.hpp"

#include <catch2/catch.hpp>
#include <cstdint>
#include <string>
#include <vector>

using namespace corockpt;

namespace {

std::span<const std::byte> bytes_of(const std::string& text) { return std::as_bytes(std::span(text.data(), text.size())); }

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

// Parses `json` as the header of a file that has `data_bytes` bytes after it.
Result<SafetensorsHeader> parse_json(const std::string& json, std::uint64_t data_bytes) {
  return parse_safetensors_header(bytes_of(json), 8 + json.size() + data_bytes);
}

// The error of parsing `json` (with `data_bytes` after it), which must fail as corrupt.
Error rejection(const std::string& json, std::uint64_t data_bytes) {
  auto parsed = parse_json(json, data_bytes);
  REQUIRE_FALSE(parsed);
  CHECK(parsed.error().code == Errc::corrupt);
  return parsed.error();
}

std::string length_prefix(std::uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out;
}

std::vector<SafetensorsEntry> sample_entries() {
  return {
      {"layer.weight", DType::float32, {2, 3}, 0, 24},
      {"layer.bias", DType::bfloat16, {4}, 24, 32},
      {"state.layer.weight.step", DType::int64, {}, 32, 40},  // 0-d
      {"empty", DType::uint8, {0, 5}, 40, 40},                // no bytes
      {"flags", DType::boolean, {3}, 40, 43},
  };
}

}  // namespace

TEST_CASE("safetensors - encode then parse gives the entries and metadata back") {
  const auto entries = sample_entries();
  const std::map<std::string, std::string> metadata{
      {"DCP_SHARDING_INFO", R"({"layer.weight": {"saved_offsets": [0, 0]}})"}, {"format", "pt"}};
  const std::string header = encode_safetensors_header(entries, metadata);
  const std::uint64_t file_size = header.size() + 43;

  auto length = parse_safetensors_header_length(bytes_of(header).first(8), file_size);
  REQUIRE(length);
  CHECK(*length == header.size() - 8);

  auto parsed = parse_safetensors_header(bytes_of(header).subspan(8), file_size);
  REQUIRE(parsed);
  CHECK(parsed->entries == entries);
  CHECK(parsed->metadata == metadata);
  CHECK(parsed->data_offset == header.size());
  CHECK(parsed->data_bytes == 43);

  // __metadata__ first, then the tensors in data order.
  const std::string json = header.substr(8);
  CHECK(json.rfind(R"({"__metadata__":)", 0) == 0);
  CHECK(json.find("\"layer.weight\"") < json.find("\"layer.bias\""));
  CHECK(json.find("\"layer.bias\"") < json.find("\"state.layer.weight.step\""));
  CHECK(contains(json, R"("layer.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]})"));
}

TEST_CASE("safetensors - no metadata writes no __metadata__ and no entries is an empty object") {
  const std::string header = encode_safetensors_header({}, {});
  CHECK(header.size() == 16);
  CHECK(header.substr(8) == "{}      ");
  auto parsed = parse_safetensors_header(bytes_of(header).subspan(8), header.size());
  REQUIRE(parsed);
  CHECK(parsed->entries.empty());
  CHECK(parsed->metadata.empty());
  CHECK(parsed->data_bytes == 0);

  const std::string one = encode_safetensors_header({{"x", DType::float32, {1}, 0, 4}}, {});
  CHECK_FALSE(contains(one, "__metadata__"));
}

TEST_CASE("safetensors - the header is padded with spaces so the data starts at a multiple of 8") {
  for (std::size_t name_length = 1; name_length <= 16; ++name_length) {
    const std::string header =
        encode_safetensors_header({{std::string(name_length, 'n'), DType::float16, {3}, 0, 6}}, {});
    INFO("name length " << name_length);
    CHECK(header.size() % 8 == 0);
    CHECK(header.substr(0, 8) == length_prefix(header.size() - 8));
    const auto json_end = header.rfind('}');
    CHECK(header.size() - json_end - 1 < 8);
    CHECK(header.find_first_not_of(' ', json_end + 1) == std::string::npos);
    CHECK(parse_safetensors_header(bytes_of(header).subspan(8), header.size() + 6));
  }
}

TEST_CASE("safetensors - parsed entries come in data order whatever the JSON order") {
  auto parsed = parse_json(R"({"z": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                               "a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}  )",
                           12);
  REQUIRE(parsed);
  REQUIRE(parsed->entries.size() == 2);
  CHECK(parsed->entries[0].name == "z");
  CHECK(parsed->entries[1].name == "a");
}

TEST_CASE("safetensors - bytes after the last tensor are allowed") {
  CHECK(parse_json(R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}})", 100));
}

TEST_CASE("safetensors - a header length larger than the file is rejected") {
  const std::string prefix = length_prefix(100);
  auto too_long = parse_safetensors_header_length(bytes_of(prefix), 50);
  REQUIRE_FALSE(too_long);
  CHECK(too_long.error().code == Errc::corrupt);
  CHECK(contains(too_long.error().message, "100"));
  CHECK(parse_safetensors_header_length(bytes_of(prefix), 108));
  CHECK_FALSE(parse_safetensors_header_length(bytes_of(prefix), 107));

  // Past the reader's limit even when the file is that large, and no wrap-around.
  CHECK_FALSE(parse_safetensors_header_length(bytes_of(length_prefix(max_safetensors_header_bytes + 1)), ~0ull));
  CHECK_FALSE(parse_safetensors_header_length(bytes_of(length_prefix(~0ull)), ~0ull));
  // Fewer than 8 bytes: a truncated file.
  CHECK_FALSE(parse_safetensors_header_length(bytes_of(prefix).first(5), 5));

  // parse_safetensors_header checks it too.
  const std::string json = "{}";
  CHECK_FALSE(parse_safetensors_header(bytes_of(json), 9));
}

TEST_CASE("safetensors - a header that is not JSON is rejected") {
  CHECK(contains(rejection("{\"a\": ", 0).message, "malformed JSON"));
  CHECK(contains(rejection("not json", 0).message, "malformed JSON"));
  CHECK(contains(rejection("", 0).message, "malformed JSON"));
  CHECK(contains(rejection("{} {}", 0).message, "malformed JSON"));   // two values
  CHECK(contains(rejection(std::string("{}\0\0", 4), 0).message, "malformed JSON"));  // NUL padding
  CHECK(contains(rejection("[1, 2]", 0).message, "object"));
  CHECK(contains(rejection("\"x\"", 0).message, "object"));
  CHECK(contains(rejection(std::string(200, '[') + std::string(200, ']'), 0).message, "nested"));
}

TEST_CASE("safetensors - an unknown dtype is rejected naming it and the tensor") {
  const auto e = rejection(R"({"w": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}})", 4);
  CHECK(contains(e.message, "F8_E4M3"));
  CHECK(contains(e.message, "\"w\""));
  CHECK(e.context.fqn == "w");
  CHECK(contains(rejection(R"({"w": {"dtype": 4, "shape": [4], "data_offsets": [0, 4]}})", 4).message, "dtype"));
}

TEST_CASE("safetensors - a shape that does not match the byte size is rejected") {
  const auto e = rejection(R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}})", 16);
  CHECK(contains(e.message, "\"w\""));
  CHECK(contains(e.message, "16"));
  CHECK(contains(e.message, "12"));
}

TEST_CASE("safetensors - data past the end of the file is rejected") {
  const std::string json = R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})";
  CHECK(parse_json(json, 16));
  const auto e = rejection(json, 15);
  CHECK(contains(e.message, "\"w\""));
  CHECK(contains(e.message, "end of the file"));
}

TEST_CASE("safetensors - overlapping entries are rejected") {
  const auto e = rejection(R"({"a": {"dtype": "U8", "shape": [16], "data_offsets": [0, 16]},
                               "b": {"dtype": "U8", "shape": [16], "data_offsets": [8, 24]}})",
                           24);
  CHECK(contains(e.message, "overlap"));
  CHECK(contains(e.message, "\"a\""));
  CHECK(contains(e.message, "\"b\""));
  // The same range twice.
  CHECK(contains(rejection(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                               "b": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}})",
                           4)
                     .message,
                 "overlap"));
}

TEST_CASE("safetensors - a hole between entries is rejected") {
  const auto e = rejection(R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
                               "b": {"dtype": "U8", "shape": [8], "data_offsets": [16, 24]}})",
                           24);
  CHECK(contains(e.message, "\"b\""));
  CHECK(contains(e.message, "[8, 16)"));
  // Data that does not start at 0 is a hole too.
  CHECK(contains(rejection(R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [4, 12]}})", 12).message, "[0, 4)"));
}

TEST_CASE("safetensors - non-string metadata is rejected") {
  const auto e = rejection(R"({"__metadata__": {"format": "pt", "step": 7}})", 0);
  CHECK(contains(e.message, "\"step\""));
  CHECK(contains(e.message, "string"));
  CHECK(contains(rejection(R"({"__metadata__": ["a"]})", 0).message, "__metadata__"));
  CHECK(contains(rejection(R"({"__metadata__": {"k": {"nested": "x"}}})", 0).message, "\"k\""));
}

TEST_CASE("safetensors - malformed entries are rejected naming the tensor") {
  const char* cases[] = {
      R"({"w": [1, 2]})",                                                                        // not an object
      R"({"w": {"dtype": "F32", "shape": [1]}})",                                                // no data_offsets
      R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1}})",            // unknown key
      R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})",                       // negative size
      R"({"w": {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}})",                      // not an integer
      R"({"w": {"dtype": "F32", "shape": 1, "data_offsets": [0, 4]}})",                          // not a list
      R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})",                           // one offset
      R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})",                     // three
      R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})",                       // negative
      R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}})",                        // end < begin
      R"({"w": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 0]}})",  // overflows
      R"({"w": {"dtype": "U8", "shape": [0, 4294967296, 4294967296], "data_offsets": [0, 0]}})",  // and here
      R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 18446744073709551616]}})",     // > uint64
  };
  for (const char* json : cases) {
    INFO(json);
    const auto e = rejection(json, 64);
    CHECK(contains(e.message, "\"w\""));
  }
}

TEST_CASE("safetensors - a tensor named twice is rejected") {
  const auto e = rejection(R"({"w": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                               "w": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}})",
                           8);
  CHECK(contains(e.message, "duplicate key \"w\""));
}
