#include "corockpt/ckpt/model_spec.hpp"

#include <catch2/catch.hpp>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "tests/ckpt/seed_spec.hpp"
#include "tests/support/temp_dir.hpp"

using namespace corockpt;
using Json = nlohmann::ordered_json;

namespace {

Json seed_json() { return Json::parse(test::seed_spec_json()); }

// Parses the seed after `edit`, expecting an invalid_argument error whose message
// contains every one of `named`.
void expect_error(const std::function<void(Json&)>& edit, std::initializer_list<std::string_view> named) {
  Json spec = seed_json();
  edit(spec);
  auto parsed = parse_model_spec(spec.dump());
  REQUIRE_FALSE(parsed);
  INFO(parsed.error().to_string());
  CHECK(parsed.error().code == Errc::invalid_argument);
  for (auto what : named) CHECK(parsed.error().message.find(what) != std::string::npos);
}

Json param(std::string unit, std::string name, std::vector<std::int64_t> shape) {
  return Json{{"unit", unit}, {"name", name}, {"shape", shape}};
}

}  // namespace

TEST_CASE("model_spec - the seed spec parses into meshes, units, params, optimizer") {
  auto parsed = parse_model_spec(test::seed_spec_json());
  REQUIRE(parsed);
  const ModelSpec& spec = *parsed;
  CHECK(spec.world_size == 8);
  REQUIRE(spec.meshes.size() == 2);
  CHECK(spec.meshes[0].name == "global");  // file order is kept
  CHECK(spec.meshes[1].shape == std::vector<std::int64_t>{2, 4});
  CHECK(spec.meshes[1].dim_names == std::vector<std::string>{"dp", "ep"});
  REQUIRE(spec.units.size() == 3);
  const UnitSpec& experts = spec.units[2];
  CHECK(experts.name == "experts");
  CHECK(experts.prefix == "second.ep_layers.{expert}.");
  CHECK(experts.mesh == "dp_ep");
  CHECK(experts.layout == UnitLayout::flat);
  CHECK(experts.shard_dim == "dp");
  CHECK(experts.expert_dim == "ep");
  CHECK(experts.num_experts == 4);
  CHECK(experts.has_experts());
  CHECK_FALSE(spec.units[0].has_experts());
  REQUIRE(spec.params.size() == 8);
  CHECK(spec.params[4].unit == "experts");
  CHECK(spec.params[4].name == "net1.0.weight");
  CHECK(spec.params[4].shape == std::vector<std::int64_t>{16, 16});
  CHECK(spec.params[4].dtype == DType::float32);
  CHECK(spec.params[4].has_optimizer_state());
  REQUIRE(spec.optimizer);
  CHECK(spec.optimizer->type == OptimizerType::adam);
  CHECK(spec.optimizer->lr == 0.1);
  CHECK(spec.optimizer->betas == std::array<double, 2>{0.9, 0.999});
  CHECK(spec.optimizer->eps == 1e-8);
  CHECK(spec.optimizer->weight_decay == 0.0);
  CHECK(spec.find_unit("second") == &spec.units[1]);
  CHECK(spec.find_mesh("dp_ep") == &spec.meshes[1]);
  CHECK(spec.find_unit("nope") == nullptr);
}

TEST_CASE("model_spec - FQNs replace {expert} and join prefix and name") {
  auto spec = parse_model_spec(test::seed_spec_json()).value();
  CHECK(fqn(spec.units[0], spec.params[0], -1) == "net.0.weight");
  CHECK(fqn(spec.units[1], spec.params[3], -1) == "second.net.0.bias");
  CHECK(fqn(spec.units[2], spec.params[4], 3) == "second.ep_layers.3.net1.0.weight");
  UnitSpec twice{.name = "u", .prefix = "a.{expert}.b.{expert}."};
  CHECK(fqn(twice, ParamSpec{.unit = "u", .name = "w"}, 12) == "a.12.b.12.w");
}

TEST_CASE("model_spec - defaults, options, HSDP and SGD") {
  auto parsed = parse_model_spec(R"({
    "world_size": 4,
    "meshes": {"hsdp": {"shape": [2, 2], "dim_names": ["replicate", "shard"]}},
    "units": [{"name": "u", "mesh": "hsdp", "layout": "per_param",
               "shard_dim": "shard", "replicate_dim": "replicate"}],
    "params": [{"unit": "u", "name": "w", "shape": [3, 5], "dtype": "bfloat16", "frozen": true},
               {"unit": "u", "name": "b", "shape": [5], "dtype": "float32"},
               {"unit": "u", "name": "running_mean", "shape": [], "dtype": "int64", "buffer": true}],
    "optimizer": {"type": "sgd", "lr": 0.5}
  })");
  REQUIRE(parsed);
  CHECK(parsed->units[0].prefix.empty());
  CHECK(parsed->units[0].layout == UnitLayout::per_param);
  CHECK(parsed->units[0].replicate_dim == "replicate");
  CHECK(parsed->params[0].frozen);
  CHECK_FALSE(parsed->params[0].has_optimizer_state());
  CHECK(parsed->params[2].buffer);
  CHECK(parsed->params[2].shape.empty());
  CHECK(parsed->params[2].dtype == DType::int64);
  REQUIRE(parsed->optimizer);
  CHECK(parsed->optimizer->type == OptimizerType::sgd);
  CHECK(parsed->optimizer->lr == 0.5);
  CHECK(parsed->optimizer->momentum == 0.0);
  CHECK(parsed->optimizer->weight_decay == 0.0);

  Json no_optimizer = seed_json();
  no_optimizer.erase("optimizer");
  auto bare = parse_model_spec(no_optimizer.dump());
  REQUIRE(bare);
  CHECK_FALSE(bare->optimizer);
  CHECK(to_string(UnitLayout::per_param) == "per_param");
  CHECK(to_string(OptimizerType::sgd) == "sgd");
}

TEST_CASE("model_spec - a flat unit may hold buffers of another dtype, per_param may mix") {
  Json spec = seed_json();
  Json buffer = param("root", "steps", {1});
  buffer["dtype"] = "int64";
  buffer["buffer"] = true;
  spec["params"].push_back(buffer);
  CHECK(parse_model_spec(spec.dump()));
  spec["units"][1]["layout"] = "per_param";
  spec["params"][3]["dtype"] = "bfloat16";
  CHECK(parse_model_spec(spec.dump()));
}

TEST_CASE("model_spec - forward_mutates: true for a buffer unless it says false, refused on a param") {
  Json spec = seed_json();
  Json counter = param("root", "counter", {1});
  counter["buffer"] = true;
  Json running_mean = param("root", "running_mean", {16});
  running_mean["buffer"] = true;
  running_mean["forward_mutates"] = true;
  Json frozen_stats = param("second", "frozen_stats", {16});
  frozen_stats["buffer"] = true;
  frozen_stats["forward_mutates"] = false;
  spec["params"].push_back(counter);
  spec["params"].push_back(running_mean);
  spec["params"].push_back(frozen_stats);
  auto parsed = parse_model_spec(spec.dump());
  REQUIRE(parsed);
  const auto& params = parsed->params;
  REQUIRE(params.size() == 11);
  CHECK(params[8].forward_mutates);  // the default
  CHECK(params[9].forward_mutates);
  CHECK_FALSE(params[10].forward_mutates);

  expect_error([](Json& s) { s["params"][0]["forward_mutates"] = false; },
               {"params[0]", "net.0.weight", "\"forward_mutates\" is for buffers only"});
  expect_error([](Json& s) { s["params"][0]["forward_mutates"] = true; }, {"\"forward_mutates\" is for buffers only"});
  expect_error(
      [](Json& s) {
        Json stats = param("root", "stats", {4});
        stats["buffer"] = true;
        stats["forward_mutates"] = "yes";
        s["params"].push_back(stats);
      },
      {"\"forward_mutates\"", "true or false"});

  // A spec built in code: false on a param is refused the same way.
  ModelSpec built = *parsed;
  built.params[0].forward_mutates = false;
  auto refused = validate(built);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == Errc::invalid_argument);
  CHECK(refused.error().message.find("\"net.0.weight\": forward_mutates is for buffers only") != std::string::npos);
}

TEST_CASE("model_spec - malformed JSON and wrong types name the key") {
  auto garbage = parse_model_spec("{\"world_size\": 8,");
  REQUIRE_FALSE(garbage);
  CHECK(garbage.error().code == Errc::invalid_argument);
  CHECK(garbage.error().message.find("malformed JSON") != std::string::npos);
  auto not_object = parse_model_spec("[1, 2]");
  REQUIRE_FALSE(not_object);
  CHECK(not_object.error().message.find("JSON object") != std::string::npos);

  expect_error([](Json& s) { s["world_size"] = "8"; }, {"\"world_size\"", "integer"});
  expect_error([](Json& s) { s["world_size"] = 8.5; }, {"\"world_size\"", "integer"});
  expect_error([](Json& s) { s["world_size"] = 0; }, {"\"world_size\"", ">= 1"});
  expect_error([](Json& s) { s.erase("world_size"); }, {"missing \"world_size\""});
  expect_error([](Json& s) { s["meshes"] = Json::array(); }, {"\"meshes\"", "object"});
  expect_error([](Json& s) { s["meshes"]["dp_ep"]["shape"] = "2x4"; }, {"mesh \"dp_ep\"", "\"shape\""});
  expect_error([](Json& s) { s["meshes"]["dp_ep"]["dim_names"] = {"dp", 4}; }, {"mesh \"dp_ep\"", "\"dim_names\""});
  expect_error([](Json& s) { s["units"] = Json::object(); }, {"\"units\"", "list"});
  expect_error([](Json& s) { s["units"][0]["mesh"] = 3; }, {"unit \"root\"", "\"mesh\"", "string"});
  expect_error([](Json& s) { s["units"][0].erase("mesh"); }, {"unit \"root\"", "missing \"mesh\""});
  expect_error([](Json& s) { s["units"][1].erase("name"); }, {"units[1]", "missing \"name\""});
  expect_error([](Json& s) { s["units"][2]["num_experts"] = "4"; }, {"unit \"experts\"", "\"num_experts\""});
  expect_error([](Json& s) { s["units"][2]["layout"] = "sharded"; }, {"unit \"experts\"", "\"sharded\""});
  expect_error([](Json& s) { s["params"][5]["shape"] = {16, "x"}; },
               {"params[5]", "net1.0.bias", "\"shape\"[1]", "integer"});
  expect_error([](Json& s) { s["params"][0]["frozen"] = "yes"; }, {"params[0]", "\"frozen\""});
  expect_error([](Json& s) { s["params"][0]["unit"] = nullptr; }, {"params[0]", "\"unit\""});
  expect_error([](Json& s) { s["optimizer"]["lr"] = "fast"; }, {"optimizer", "\"lr\""});
  expect_error([](Json& s) { s["optimizer"]["betas"] = {0.9}; }, {"optimizer", "\"betas\""});
}

TEST_CASE("model_spec - a key given twice in one object is an error naming it, not the last one winning") {
  for (const std::string text : {
           R"({"world_size": 8, "world_size": 4, "meshes": {}, "units": [], "params": []})",
           R"({"world_size": 1, "meshes": {"m": {"shape": [1], "dim_names": ["a"]}, "m": {"shape": [1], "dim_names": ["b"]}},
               "units": [], "params": []})"}) {
    auto spec = parse_model_spec(text);
    INFO(text);
    REQUIRE_FALSE(spec);
    CHECK(spec.error().code == Errc::invalid_argument);
    CHECK_THAT(spec.error().message, Catch::Contains("duplicate key"));
  }
}

TEST_CASE("model_spec - unknown keys are named, not ignored") {
  expect_error([](Json& s) { s["units"][2]["expert_dims"] = "ep"; }, {"unit \"experts\"", "\"expert_dims\""});
  expect_error([](Json& s) { s["params"][1]["dtyp"] = "float32"; }, {"params[1]", "\"dtyp\""});
  expect_error([](Json& s) { s["seed"] = 0; }, {"\"seed\""});
  // momentum belongs to SGD.
  expect_error([](Json& s) { s["optimizer"]["momentum"] = 0.9; }, {"optimizer", "\"momentum\""});
}

TEST_CASE("model_spec - meshes whose size is not the world size are named") {
  expect_error([](Json& s) { s["meshes"]["dp_ep"]["shape"] = {2, 3}; },
               {"mesh \"dp_ep\"", "6 ranks", "world_size is 8"});
  expect_error([](Json& s) { s["world_size"] = 16; }, {"mesh \"global\"", "world_size is 16"});
  expect_error([](Json& s) { s["meshes"]["dp_ep"]["dim_names"] = {"dp", "dp"}; }, {"mesh \"dp_ep\"", "'dp'"});
  expect_error([](Json& s) { s["meshes"]["dp_ep"]["dim_names"] = {"dp"}; }, {"mesh \"dp_ep\"", "dim names"});
  expect_error([](Json& s) { s["meshes"]["dp_ep"]["shape"] = {8, 0}; }, {"mesh \"dp_ep\"", "size 0"});
}

TEST_CASE("model_spec - units: unknown mesh or dim, duplicates, expert counts") {
  expect_error([](Json& s) { s["units"][0]["mesh"] = "nope"; }, {"unit \"root\"", "unknown mesh \"nope\"", "\"global\""});
  expect_error([](Json& s) { s["units"][2]["shard_dim"] = "tp"; },
               {"unit \"experts\"", "unknown dim \"tp\"", "shard_dim", "\"dp\", \"ep\""});
  expect_error([](Json& s) { s["units"][2]["expert_dim"] = "x"; }, {"unit \"experts\"", "\"x\"", "expert_dim"});
  expect_error([](Json& s) { s["units"][1]["replicate_dim"] = "dp"; },
               {"unit \"second\"", "unknown dim \"dp\"", "replicate_dim"});
  expect_error([](Json& s) { s["units"][1]["name"] = "root"; }, {"unit \"root\"", "twice"});
  expect_error([](Json& s) { s["units"][2].erase("num_experts"); }, {"unit \"experts\"", "num_experts"});
  expect_error([](Json& s) { s["units"][2]["num_experts"] = 4ll << 32; },
               {"unit \"experts\"", "num_experts 17179869184", "more than the 65536"});
  expect_error([](Json& s) { s["units"][2]["num_experts"] = 6; },
               {"unit \"experts\"", "num_experts 6", "not divisible", "\"ep\""});
  expect_error([](Json& s) { s["units"][2]["num_experts"] = 0; }, {"unit \"experts\"", "num_experts"});
  expect_error([](Json& s) { s["units"][2].erase("shard_dim"); }, {"unit \"experts\"", "shard_dim"});
  expect_error([](Json& s) { s["units"][2]["prefix"] = "second.ep_layers."; }, {"unit \"experts\"", "{expert}"});
  expect_error([](Json& s) { s["units"][1]["prefix"] = "x.{expert}."; }, {"unit \"second\"", "{expert}"});
  expect_error([](Json& s) { s["units"][1]["num_experts"] = 2; }, {"unit \"second\"", "num_experts"});
  expect_error([](Json& s) { s["units"][2]["replicate_dim"] = "dp"; }, {"unit \"experts\"", "replicate_dim"});
  expect_error(
      [](Json& s) {
        s["units"][1]["mesh"] = "dp_ep";
        s["units"][1]["shard_dim"] = "dp";
      },
      {"unit \"second\"", "shard_dim"});
  expect_error(
      [](Json& s) {
        s["meshes"]["cube"] = Json{{"shape", {2, 2, 2}}, {"dim_names", {"a", "b", "c"}}};
        s["units"][1]["mesh"] = "cube";
        s["units"][1]["shard_dim"] = "b";
        s["units"][1]["replicate_dim"] = "a";
      },
      {"unit \"second\"", "2-d mesh"});
}

TEST_CASE("model_spec - params: unknown unit, duplicate FQNs, dtypes, shapes") {
  expect_error([](Json& s) { s["params"].push_back(param("third", "w", {2})); }, {"\"w\"", "unknown unit \"third\""});
  expect_error([](Json& s) { s["params"].push_back(param("root", "net.0.bias", {2})); },
               {"duplicate FQN \"net.0.bias\"", "params[1]", "params[8]"});
  // A root param named like a param of `second` collides after the prefix is applied.
  expect_error([](Json& s) { s["params"].push_back(param("root", "second.net.0.weight", {2})); },
               {"duplicate FQN \"second.net.0.weight\""});
  // A param of `second` collides with expert 3's FQN (every expert is checked).
  expect_error([](Json& s) { s["params"].push_back(param("second", "ep_layers.3.net2.0.bias", {2})); },
               {"duplicate FQN \"second.ep_layers.3.net2.0.bias\""});
  expect_error([](Json& s) { s["params"][2]["dtype"] = "float8"; },
               {"params[2]", "net.0.weight", "unknown dtype \"float8\""});
  expect_error([](Json& s) { s["params"][1]["dtype"] = "bfloat16"; },
               {"flat unit \"root\"", "mixes dtypes", "\"net.0.weight\" is float32", "\"net.0.bias\" is bfloat16"});
  expect_error([](Json& s) { s["params"][3]["shape"] = {16, -1}; },
               {"param \"second.net.0.bias\"", "negative size -1"});
  expect_error([](Json& s) { s["params"][0]["name"] = ""; }, {"params[0]", "empty name"});
  // Bytes beyond 64 bits: by the shape alone, and through the experts' copies (4 here).
  expect_error([](Json& s) { s["params"][0]["shape"] = {4294967296, 4294967296}; },
               {"param \"net.0.weight\"", "more bytes than fit in 64 bits"});
  expect_error([](Json& s) { s["params"][4]["shape"] = {std::int64_t{1} << 58}; },
               {"more bytes than fit in 64 bits"});
  // Each of root's two params fits; together, concatenated in the flat unit, they do not.
  expect_error(
      [](Json& s) {
        s["params"][0]["shape"] = {std::int64_t{1} << 59};  // 2^61 bytes, 3 x that with Adam: fits
        s["params"][1]["shape"] = {std::int64_t{1} << 59};
      },
      {"flat unit \"root\"", "together", "more bytes than fit in 64 bits"});

  Json spec = seed_json();
  spec["params"][3]["shape"] = {-4};
  auto negative = parse_model_spec(spec.dump());
  REQUIRE_FALSE(negative);
  CHECK(negative.error().context.fqn == "second.net.0.bias");
}

TEST_CASE("model_spec - optimizer: unknown type and values PyTorch rejects") {
  expect_error([](Json& s) { s["optimizer"]["type"] = "adamw"; }, {"unknown optimizer type \"adamw\""});
  expect_error([](Json& s) { s["optimizer"].erase("type"); }, {"optimizer", "missing \"type\""});
  expect_error([](Json& s) { s["optimizer"]["lr"] = -1; }, {"optimizer", "\"lr\"", ">= 0"});
  expect_error([](Json& s) { s["optimizer"]["betas"] = {0.9, 1.0}; }, {"optimizer", "\"betas\""});
  expect_error([](Json& s) { s["optimizer"] = Json{{"type", "sgd"}, {"momentum", -0.5}}; },
               {"optimizer", "\"momentum\""});
}

TEST_CASE("model_spec - validate checks a spec built in code") {
  ModelSpec spec = parse_model_spec(test::seed_spec_json()).value();
  CHECK(validate(spec));
  spec.params.push_back(ParamSpec{.unit = "experts", .name = "net1.0.weight", .shape = {16, 16}});
  auto dup = validate(spec);
  REQUIRE_FALSE(dup);
  CHECK(dup.error().message.find("second.ep_layers.0.net1.0.weight") != std::string::npos);
  spec.params.pop_back();
  spec.world_size = 0;
  CHECK_FALSE(validate(spec));
}

TEST_CASE("model_spec - load_model_spec reads a file and names it in errors") {
  test::TempDir dir;
  {
    std::ofstream(dir.file("seed.json")) << test::seed_spec_json();
    std::ofstream(dir.file("bad.json")) << R"({"world_size": "eight"})";
  }
  auto seed = load_model_spec(dir.file("seed.json"));
  REQUIRE(seed);
  CHECK(seed->units.size() == 3);
  auto bad = load_model_spec(dir.file("bad.json"));
  REQUIRE_FALSE(bad);
  CHECK(bad.error().context.path == dir.file("bad.json"));
  CHECK(bad.error().message.find("\"world_size\"") != std::string::npos);
  auto missing = load_model_spec(dir.file("absent.json"));
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == Errc::not_found);
  CHECK(missing.error().context.path == dir.file("absent.json"));
}
