#include "corockpt/ckpt/format/checkpoint_metadata.hpp"

#include <catch2/catch.hpp>
#include <functional>
#include <limits>
#include <string>

using namespace corockpt;
using Json = nlohmann::json;

namespace {

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

// Two ranks' files; a 4x2 float32 weight in two chunks of 16 bytes (block_size 8: two
// checksums each), a 0-d step, an empty tensor with no chunks.
CheckpointMetadata sample_metadata() {
  CheckpointMetadata m;
  m.world_size = 2;
  m.meshes = {MeshSpec{"dp", {2}, {"dp"}}};
  m.block_size = 8;
  m.files = {{"rank00000-000.safetensors", 200}, {"rank00001-000.safetensors", 100}};
  m.tensors["w"] = TensorRecord{DType::float32,
                                {4, 2},
                                {ChunkRecord{Box{{0, 0}, {2, 2}}, "rank00000-000.safetensors", 128, 144, {1, 2}},
                                 ChunkRecord{Box{{2, 0}, {2, 2}}, "rank00001-000.safetensors", 64, 80, {3, 4}}}};
  m.tensors["state.w.step"] = TensorRecord{
      DType::float32, {}, {ChunkRecord{Box{{}, {}}, "rank00000-000.safetensors", 144, 148, {0xDEADBEEFu}}}};
  m.tensors["empty"] = TensorRecord{DType::bfloat16, {0, 3}, {}};
  m.param_groups = Json::array({{{"lr", 0.1}, {"params", {"w"}}}});
  m.user = {{"step", 7}, {"note", "hello"}};
  return m;
}

// The sample as JSON, changed by `edit`, then parsed.
Result<CheckpointMetadata> parse_edited(const std::function<void(Json&)>& edit) {
  Json j = Json::parse(to_json_text(sample_metadata()));
  edit(j);
  return parse_checkpoint_metadata(j.dump());
}

// The error of parsing the edited sample, which must fail with `code`.
Error rejection(const std::function<void(Json&)>& edit, Errc code = Errc::corrupt) {
  auto parsed = parse_edited(edit);
  REQUIRE_FALSE(parsed);
  CHECK(parsed.error().code == code);
  return parsed.error();
}

Json& first_chunk(Json& j) { return j["tensors"]["w"]["chunks"][0]; }

}  // namespace

TEST_CASE("metadata - to_json_text then parse gives the same metadata") {
  const auto original = sample_metadata();
  const std::string text = to_json_text(original);
  auto parsed = parse_checkpoint_metadata(text);
  REQUIRE(parsed);
  CHECK(parsed->version == 1);  // no objects: the version every build reads
  CHECK(parsed->world_size == 2);
  REQUIRE(parsed->meshes.size() == 1);
  CHECK(parsed->meshes[0].name == "dp");
  CHECK(parsed->meshes[0].shape == std::vector<std::int64_t>{2});
  CHECK(parsed->meshes[0].dim_names == std::vector<std::string>{"dp"});
  CHECK(parsed->block_size == 8);
  CHECK(parsed->files == original.files);
  CHECK(parsed->tensors == original.tensors);
  CHECK(parsed->param_groups == original.param_groups);
  CHECK(parsed->user == original.user);
  CHECK(to_json_text(*parsed) == text);
}

TEST_CASE("metadata - the text starts with the format and version and uses PyTorch dtype names") {
  const std::string text = to_json_text(sample_metadata());
  CHECK(text.rfind(R"({"format":"corockpt","version":1,"world_size":2,)", 0) == 0);
  CHECK(contains(text, R"("w":{"dtype":"float32","shape":[4,2],"chunks":[{"offsets":[0,0],"sizes":[2,2],)"
                       R"("file":"rank00000-000.safetensors","begin":128,"end":144,"crc32c":[1,2]})"));
  CHECK(contains(text, R"("crc32c":[3735928559])"));
  CHECK(text.back() == '\n');
}

TEST_CASE("metadata - checksum_blocks counts blocks from the range start, the last one short") {
  CHECK(checksum_blocks(0, 16) == 0);
  CHECK(checksum_blocks(1, 16) == 1);
  CHECK(checksum_blocks(16, 16) == 1);
  CHECK(checksum_blocks(17, 16) == 2);
  CHECK(checksum_blocks(std::numeric_limits<std::uint64_t>::max(), 1) == std::numeric_limits<std::uint64_t>::max());
  CHECK(checksum_blocks(std::numeric_limits<std::uint64_t>::max(), default_checksum_block) == (1ull << 44));
}

TEST_CASE("metadata - plain file names stay inside the checkpoint directory") {
  CHECK(is_plain_file_name("rank00000-000.safetensors"));
  CHECK(is_plain_file_name("..x"));
  CHECK_FALSE(is_plain_file_name(""));
  CHECK_FALSE(is_plain_file_name("."));
  CHECK_FALSE(is_plain_file_name(".."));
  CHECK_FALSE(is_plain_file_name("../x"));
  CHECK_FALSE(is_plain_file_name("/abs"));
  CHECK_FALSE(is_plain_file_name("a/b"));
  CHECK_FALSE(is_plain_file_name(std::string_view("a\0b", 3)));
  CHECK_FALSE(is_plain_file_name(checkpoint_metadata_file));
}

TEST_CASE("metadata - a file named ../x is rejected") {
  const auto listed = rejection([](Json& j) { j["files"]["../x"] = 10; });
  CHECK(contains(listed.message, "\"../x\""));
  const auto chunk = rejection([](Json& j) { first_chunk(j)["file"] = "../x"; });
  CHECK(contains(chunk.message, "\"../x\""));
  CHECK(contains(chunk.message, "tensor \"w\""));
  CHECK(chunk.context.fqn == "w");
}

TEST_CASE("metadata - an absolute file name is rejected") {
  CHECK(contains(rejection([](Json& j) { j["files"]["/abs"] = 10; }).message, "\"/abs\""));
  CHECK(contains(rejection([](Json& j) { first_chunk(j)["file"] = "/abs"; }).message, "\"/abs\""));
}

TEST_CASE("metadata - a file name with a slash is rejected") {
  CHECK(contains(rejection([](Json& j) { j["files"]["a/b"] = 10; }).message, "\"a/b\""));
  CHECK(contains(rejection([](Json& j) { j["files"]["corockpt.metadata.json"] = 10; }).message, "plain"));
}

TEST_CASE("metadata - a chunk in a file that is not listed is rejected") {
  const auto e = rejection([](Json& j) { first_chunk(j)["file"] = "rank00009-000.safetensors"; });
  CHECK(contains(e.message, "\"rank00009-000.safetensors\""));
  CHECK(contains(e.message, "not listed"));
  CHECK(contains(e.message, "tensor \"w\" chunk 0"));
}

TEST_CASE("metadata - a byte range past the file size is rejected") {
  const auto e = rejection([](Json& j) { j["files"]["rank00001-000.safetensors"] = 70; });
  CHECK(contains(e.message, "tensor \"w\" chunk 1"));
  CHECK(contains(e.message, "end of file"));
  CHECK(contains(rejection([](Json& j) {
                   first_chunk(j)["begin"] = 170;
                   first_chunk(j)["end"] = 138;
                 }).message,
                 "end before"));
  CHECK(contains(rejection([](Json& j) { first_chunk(j)["end"] = 164; }).message, "needs 16"));
}

TEST_CASE("metadata - a box out of the shape's bounds is rejected") {
  const auto e = rejection([](Json& j) { first_chunk(j)["offsets"] = {3, 0}; });
  CHECK(contains(e.message, "leaves shape [4, 2]"));
  CHECK(contains(rejection([](Json& j) { first_chunk(j)["offsets"] = {-1, 0}; }).message, "leaves"));
  CHECK(contains(rejection([](Json& j) { first_chunk(j)["sizes"] = {5, 0}; }).message, "leaves"));
  CHECK(contains(rejection([](Json& j) { first_chunk(j)["offsets"] = {std::numeric_limits<std::int64_t>::max(), 0}; })
                     .message,
                 "leaves"));
}

TEST_CASE("metadata - a box whose ndim differs from the shape is rejected") {
  const auto e = rejection([](Json& j) {
    first_chunk(j)["offsets"] = {0};
    first_chunk(j)["sizes"] = {2};
  });
  CHECK(contains(e.message, "2 dims"));
  CHECK(contains(rejection([](Json& j) { first_chunk(j)["sizes"] = {2, 2, 1}; }).message, "dims"));
}

TEST_CASE("metadata - a wrong number of checksums is rejected") {
  const auto e = rejection([](Json& j) { first_chunk(j)["crc32c"] = {1}; });
  CHECK(contains(e.message, "1 checksums for 2 blocks"));
  CHECK(contains(rejection([](Json& j) { first_chunk(j)["crc32c"] = {1, 4294967296}; }).message, "32-bit"));
  CHECK(contains(rejection([](Json& j) { first_chunk(j)["crc32c"] = {1, -2}; }).message, "32-bit"));
  CHECK(contains(rejection([](Json& j) { j["block_size"] = 0; }).message, "block_size"));
}

TEST_CASE("metadata - a newer version is unavailable, not corrupt") {
  const auto e = rejection(
      [](Json& j) {
        j["version"] = checkpoint_format_version + 1;
        j.erase("tensors");  // a newer version may differ in anything else
        j["new_key"] = true;
      },
      Errc::unavailable);
  CHECK(contains(e.message, "newer corockpt"));
  CHECK(contains(rejection([](Json& j) { j["version"] = 0; }).message, "version"));
  CHECK(contains(rejection([](Json& j) { j["version"] = "1"; }).message, "version"));
  CHECK(contains(rejection([](Json& j) { j["format"] = "dcp"; }).message, "corockpt"));
}

TEST_CASE("metadata - an unknown dtype is rejected naming it and the tensor") {
  const auto e = rejection([](Json& j) { j["tensors"]["w"]["dtype"] = "float8"; });
  CHECK(contains(e.message, "\"float8\""));
  CHECK(contains(e.message, "tensor \"w\""));
  CHECK(contains(rejection([](Json& j) { j["tensors"]["w"]["dtype"] = "F32"; }).message, "\"F32\""));
}

TEST_CASE("metadata - malformed JSON, unknown and missing keys, and wrong types are rejected") {
  auto not_json = parse_checkpoint_metadata("{\"format\": ");
  REQUIRE_FALSE(not_json);
  CHECK(not_json.error().code == Errc::corrupt);
  CHECK(contains(not_json.error().message, "malformed JSON"));
  CHECK_FALSE(parse_checkpoint_metadata("[]"));
  CHECK_FALSE(parse_checkpoint_metadata(R"({"format": "corockpt", "version": 1, "version": 1})"));

  CHECK(contains(rejection([](Json& j) { j["extra"] = 1; }).message, "\"extra\""));
  CHECK(contains(rejection([](Json& j) { j.erase("files"); }).message, "\"files\""));
  CHECK(contains(rejection([](Json& j) { j["tensors"]["w"]["chunks"][0]["extra"] = 1; }).message, "\"extra\""));
  CHECK(contains(rejection([](Json& j) { j["tensors"]["w"]["shape"] = {4, -2}; }).message, "shape"));
  CHECK(contains(rejection([](Json& j) { j["world_size"] = 0; }).message, "world_size"));
  CHECK(contains(rejection([](Json& j) { j["meshes"][0]["dim_names"] = {"a", "b"}; }).message, "dim_names"));
  CHECK(contains(rejection([](Json& j) { j["param_groups"] = Json::object(); }).message, "param_groups"));
  CHECK(contains(rejection([](Json& j) { j["user"] = 3; }).message, "user"));
  // A user blob past its limit (a hostile or foreign file: saves refuse to write one) is
  // refused by the first pass over the text, before any of it is built; one within it
  // by strings but over it as JSON (escapes, numbers), once built.
  const Error big = rejection([](Json& j) { j["user"] = {{"s", std::string(max_user_blob_bytes, 'x')}}; });
  CHECK(contains(big.message, "\"user\" holds more than " + std::to_string(max_user_blob_bytes) + " bytes of text"));
  const Error escaped = rejection([](Json& j) { j["user"] = {{"s", std::string(max_user_blob_bytes / 2, '\n')}}; });
  CHECK(contains(escaped.message, "\"user\""));
  CHECK(contains(escaped.message, "user blob is " + std::to_string(max_user_blob_bytes + 8) + " bytes"));
  CHECK(contains(rejection([](Json& j) { j["files"]["rank00000-000.safetensors"] = -1; }).message, "size"));
}

TEST_CASE("metadata - a chunk with no elements needs no bytes and no checksums") {
  auto parsed = parse_edited([](Json& j) {
    j["tensors"]["empty"]["chunks"] = Json::array(
        {{{"offsets", {0, 0}}, {"sizes", {0, 3}}, {"file", "rank00000-000.safetensors"}, {"begin", 0}, {"end", 0},
          {"crc32c", Json::array()}}});
  });
  REQUIRE(parsed);
  CHECK(parsed->tensors.at("empty").chunks.size() == 1);
}

TEST_CASE("metadata - objects (values that are not tensors) round-trip, and only they make the text version 2") {
  auto with_objects = sample_metadata();
  with_objects.files["rank00001-objects.bin"] = 20;
  with_objects.objects["optim.param_groups.0.lr"] = ObjectRecord{"rank00001-objects.bin", 0, 12, {7, 8}};
  with_objects.objects["counter"] = ObjectRecord{"rank00001-objects.bin", 12, 12, {}};  // empty bytes
  const std::string text = to_json_text(with_objects);
  auto parsed = parse_checkpoint_metadata(text);
  REQUIRE(parsed);
  CHECK(parsed->version == 2);
  CHECK(parsed->objects == with_objects.objects);
  CHECK(parsed->tensors == with_objects.tensors);
  CHECK(to_json_text(*parsed) == text);

  // A build that knows version 1 refuses the objects as from a newer corockpt, not as corrupt.
  CHECK(Json::parse(text)["version"] == 2);
  CHECK(Json::parse(to_json_text(sample_metadata())).contains("objects") == false);
}

TEST_CASE("metadata - a bad object is rejected naming it") {
  auto edited = [](const std::function<void(Json&)>& edit) {
    auto m = sample_metadata();
    m.files["rank00000-objects.bin"] = 16;
    m.objects["lr"] = ObjectRecord{"rank00000-objects.bin", 0, 16, {1, 2}};
    Json j = Json::parse(to_json_text(m));
    edit(j);
    return parse_checkpoint_metadata(j.dump());
  };
  REQUIRE(edited([](Json&) {}));
  auto rejected = [&](const std::function<void(Json&)>& edit, std::string_view part) {
    auto parsed = edited(edit);
    REQUIRE_FALSE(parsed);
    CHECK(parsed.error().code == Errc::corrupt);
    CHECK(contains(parsed.error().message, part));
    CHECK(contains(parsed.error().message, "lr"));
  };
  rejected([](Json& j) { j["objects"]["lr"]["end"] = 17; }, "past the end");
  rejected([](Json& j) { j["objects"]["lr"]["file"] = "../x"; }, "plain file name");
  rejected([](Json& j) { j["objects"]["lr"]["crc32c"] = {1}; }, "checksums");
  rejected([](Json& j) { j["objects"]["lr"]["extra"] = 1; }, "unknown key");
  auto clash = edited([](Json& j) { j["objects"]["w"] = j["objects"]["lr"]; });  // "w" is a tensor
  REQUIRE_FALSE(clash);
  CHECK(contains(clash.error().message, "name of a tensor"));
  auto not_object = parse_checkpoint_metadata([&] {
    Json j = Json::parse(to_json_text(sample_metadata()));
    j["objects"] = Json::array();
    return j.dump();
  }());
  REQUIRE_FALSE(not_object);
  CHECK(contains(not_object.error().message, "objects"));
}
