// Saving and loading checkpoints: round trips across world sizes, layouts and dtypes,
// the commit protocol's refusals, strictness.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <set>

#include "ckpt/collector.hpp"
#include "ckpt/known_values.hpp"
#include "ckpt/load.hpp"
#include "ckpt/save.hpp"
#include "tests/ckpt/seed_spec.hpp"
#include "tests/support/local_ranks.hpp"
#include "tests/support/temp_dir.hpp"

using namespace corockpt;
using corockpt::test::run_local_ranks;
using corockpt::test::TempDir;
using corockpt::test::TestIo;

namespace {

ModelSpec spec_of(const std::string& json) {
  auto spec = parse_model_spec(json);
  if (!spec) throw std::runtime_error(spec.error().to_string());
  return *spec;
}

// Odd shapes (flat ranges cut rows), a 3-d param, a 0-size dim, a buffer, a frozen
// param, HSDP (replicated shards) and experts, on `world` ranks.
std::string odd_spec_json(const std::string& layout, int world, const std::string& dtype) {
  const std::string n = std::to_string(world), half = std::to_string(world / 2);
  return R"({"world_size": )" + n + R"(,
  "meshes": {"all": {"shape": [)" + n + R"(], "dim_names": ["fsdp"]},
             "hsdp": {"shape": [2, )" + half + R"(], "dim_names": ["replicate", "shard"]}},
  "units": [
    {"name": "a", "prefix": "a.", "mesh": "all", "layout": ")" + layout + R"("},
    {"name": "h", "prefix": "h.", "mesh": "hsdp", "shard_dim": "shard", "replicate_dim": "replicate", "layout": ")" +
         layout + R"("},
    {"name": "e", "prefix": "e.{expert}.", "mesh": "hsdp", "shard_dim": "replicate", "expert_dim": "shard",
     "num_experts": )" + half + R"(, "layout": ")" + layout + R"("}],
  "params": [
    {"unit": "a", "name": "w", "shape": [7, 5], "dtype": ")" + dtype + R"("},
    {"unit": "a", "name": "cube", "shape": [3, 4, 5], "dtype": ")" + dtype + R"("},
    {"unit": "a", "name": "frozen", "shape": [9], "dtype": ")" + dtype + R"(", "frozen": true},
    {"unit": "a", "name": "stats", "shape": [4], "dtype": ")" + dtype + R"(", "buffer": true},
    {"unit": "h", "name": "w", "shape": [5, 3], "dtype": ")" + dtype + R"("},
    {"unit": "h", "name": "none", "shape": [0, 3], "dtype": ")" + dtype + R"("},
    {"unit": "e", "name": "w", "shape": [3, 2], "dtype": ")" + dtype + R"("}],
  "optimizer": {"type": "adam"}})";
}

struct Loaded {
  std::int64_t checked = 0;
  std::string mismatch;
  LoadReport report;
};

// Builds the spec's model on this rank, fills it with known values, saves it to `dir`.
Task<SaveReport> save_known(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> world, CheckpointIo io,
                            std::string dir) {
  auto model = co_await Model::build(spec, rank, std::move(world));
  if (!model) co_return fail(model.error());
  (*model)->allocate();
  (*model)->fill_known_state();
  SaveOptions options;
  options.user["step"] = 7;
  co_return co_await save_checkpoint(**model, io, std::move(dir), std::move(options));
}

// Builds the spec's model (zeroed), loads `dir` into it and checks every local value,
// then the full state dict too (rank 0 holds it).
Task<Loaded> load_and_check(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> world, CheckpointIo io,
                            std::string dir, LoadOptions options) {
  auto model = co_await Model::build(spec, rank, std::move(world));
  if (!model) co_return fail(model.error());
  (*model)->allocate();
  for (auto& inst : (*model)->instances()) {  // scramble: the load must write everything
    if (inst.flat_value.data) std::memset(inst.flat_value.data, 0x7f, inst.flat_value.nbytes());
    for (auto& slot : inst.params) {
      if (slot.value.data) std::memset(slot.value.data, 0x7f, slot.value.nbytes());
    }
  }
  auto report = co_await load_checkpoint(**model, io, std::move(dir), std::move(options));
  if (!report) co_return fail(report.error());
  Loaded out{.report = *report};
  auto chunks = LocalChunks::of(**model);
  if (!chunks) co_return fail(chunks.error());
  auto local = check_known_values(chunks->chunks());
  out.checked = local.checked;
  if (!local.ok()) {
    out.mismatch = *local.first_mismatch;
    co_return out;
  }
  auto full = co_await get_state_dict(**model, {.full_state_dict = true});
  if (!full) co_return fail(full.error());
  std::vector<LocalChunk> whole;
  auto view_of = [&](const std::string& name, const StateValue& value) {
    const TensorView& v = local_view(value);
    whole.push_back({.name = name, .dtype = v.dtype, .shape = v.shape, .box = whole_box(v.shape), .bytes = v.bytes()});
  };
  for (const auto& [name, value] : full->model) view_of(name, value);
  for (const auto& [fqn, states] : full->optim.state) {
    for (const auto& [state, value] : states) view_of("state." + fqn + "." + state, value);
  }
  auto full_check = check_known_values(whole);
  out.checked += full_check.checked;
  if (!full_check.ok()) out.mismatch = "full state dict: " + *full_check.first_mismatch;
  co_return out;
}

void save_on(TestIo& io, const ModelSpec& spec, const std::string& dir) {
  auto saved = run_local_ranks<SaveReport>(io.runtime(), spec.world_size, [&](int r, std::shared_ptr<Communicator> w) {
    return save_known(spec, r, std::move(w), io.io(), dir);
  });
  for (auto& s : saved) {
    INFO((s ? std::string() : s.error().to_string()));
    REQUIRE(s.has_value());
  }
  CHECK(saved[0]->total_bytes > 0);
}

std::vector<Result<Loaded>> load_on(TestIo& io, const ModelSpec& spec, const std::string& dir,
                                    LoadOptions options = {}) {
  return run_local_ranks<Loaded>(io.runtime(), spec.world_size, [&](int r, std::shared_ptr<Communicator> w) {
    return load_and_check(spec, r, std::move(w), io.io(), dir, options);
  });
}

}  // namespace

TEST_CASE("Checkpoint: the seed saved on 8 ranks (flat) loads on 8, 6, 4, 2 and 1 ranks, flat and per_param, fp32 and bf16") {
  TempDir tmp;
  TestIo io;
  const ModelSpec saved_spec = spec_of(test::seed_spec_json("flat", 8, 4));
  const std::string dir = tmp.file("ckpt");
  save_on(io, saved_spec, dir);
  REQUIRE(std::filesystem::exists(dir + "/corockpt.metadata.json"));

  const std::vector<std::pair<int, int>> worlds = {{8, 4}, {6, 2}, {4, 2}, {2, 2}, {1, 1}};
  for (auto [world, ep] : worlds) {
    for (std::string layout : {"flat", "per_param"}) {
      for (std::string dtype : {"float32", "bfloat16"}) {
        const ModelSpec spec = spec_of(test::seed_spec_json(layout, world, ep, dtype));
        auto loaded = load_on(io, spec, dir);
        std::int64_t checked = 0;
        for (int r = 0; r < world; ++r) {
          INFO("world " << world << " " << layout << " " << dtype << " rank " << r);
          REQUIRE(loaded[r].has_value());
          CHECK(loaded[r]->mismatch == "");
          CHECK(loaded[r]->report.saved_world_size == 8);
          CHECK(loaded[r]->report.user["step"] == 7);
          checked += loaded[r]->checked;
        }
        CHECK(checked > 0);
      }
    }
  }
}

TEST_CASE("Checkpoint: odd shapes, HSDP replicas, buffers and frozen params round-trip between layouts and world sizes") {
  TempDir tmp;
  TestIo io;
  for (std::string saved_layout : {"flat", "per_param"}) {
    const std::string dir = tmp.file("odd-" + saved_layout);
    save_on(io, spec_of(odd_spec_json(saved_layout, 8, "float32")), dir);
    for (int world : {8, 4, 2}) {
      for (std::string layout : {"flat", "per_param"}) {
        auto loaded = load_on(io, spec_of(odd_spec_json(layout, world, "float32")), dir);
        for (int r = 0; r < world; ++r) {
          INFO("saved " << saved_layout << ", loaded on " << world << " " << layout << " rank " << r);
          REQUIRE(loaded[r].has_value());
          CHECK(loaded[r]->mismatch == "");
        }
      }
    }
  }
}

TEST_CASE("Checkpoint: replicated chunks are written once and every rank writes") {
  TempDir tmp;
  TestIo io;
  const std::string dir = tmp.file("ckpt");
  save_on(io, spec_of(odd_spec_json("per_param", 8, "float32")), dir);
  std::set<std::string> writers;
  std::size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.ends_with(".safetensors")) {
      ++files;
      writers.insert(name.substr(0, 9));
    }
  }
  // The metadata lists every chunk once: HSDP's two replicas of a shard are one chunk.
  auto text = [&] {
    std::ifstream in(dir + "/corockpt.metadata.json");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  auto metadata = parse_checkpoint_metadata(text);
  REQUIRE(metadata.has_value());
  CHECK(metadata->tensors.at("h.w").chunks.size() == 3);  // 5 rows in 4 shards (2, 2, 1, 0), 2 replicas each
  CHECK(metadata->tensors.at("a.stats").chunks.size() == 1);      // a buffer on every rank
  CHECK(metadata->tensors.at("state.a.w.step").chunks.size() == 1);
  CHECK(metadata->tensors.at("h.none").chunks.empty());           // empty: listed, not written
  CHECK(writers.size() == 8);  // every rank wrote something
  CHECK(files >= 8);
}

TEST_CASE("Checkpoint: saving onto an existing checkpoint is refused and leaves it intact") {
  TempDir tmp;
  TestIo io;
  const ModelSpec spec = spec_of(test::seed_spec_json("flat", 4, 2));
  const std::string dir = tmp.file("ckpt");
  save_on(io, spec, dir);
  auto again = run_local_ranks<SaveReport>(io.runtime(), 4, [&](int r, std::shared_ptr<Communicator> w) {
    return save_known(spec, r, std::move(w), io.io(), dir);
  });
  for (auto& s : again) {
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().code == Errc::already_exists);
  }
  for (const auto& entry : std::filesystem::directory_iterator(tmp.path())) {
    CHECK(entry.path().filename().string().find(".tmp-") == std::string::npos);  // cleaned up
  }
  for (auto& l : load_on(io, spec, dir)) {
    REQUIRE(l.has_value());
    CHECK(l->mismatch == "");
  }
}

TEST_CASE("Checkpoint: a partial checkpoint is never loaded") {
  TempDir tmp;
  TestIo io;
  const ModelSpec spec = spec_of(test::seed_spec_json("flat", 2, 2));
  const std::string dir = tmp.file("ckpt");
  save_on(io, spec, dir);
  std::filesystem::rename(dir, dir + ".tmp-0123456789abcdef");
  for (auto& l : load_on(io, spec, dir + ".tmp-0123456789abcdef")) {
    REQUIRE_FALSE(l.has_value());
    CHECK(l.error().code == Errc::invalid_argument);
  }
  std::filesystem::rename(dir + ".tmp-0123456789abcdef", dir);
  std::filesystem::remove(dir + "/corockpt.metadata.json");
  for (auto& l : load_on(io, spec, dir)) {
    REQUIRE_FALSE(l.has_value());
    CHECK(l.error().code == Errc::not_found);
    CHECK_THAT(l.error().message, Catch::Contains("not a complete checkpoint"));
  }
}

TEST_CASE("Checkpoint: a key the model needs and the checkpoint lacks is an error with strict, a report without") {
  TempDir tmp;
  TestIo io;
  const std::string dir = tmp.file("ckpt");
  save_on(io, spec_of(test::seed_spec_json("flat", 2, 2)), dir);
  std::string bigger = test::seed_spec_json("flat", 2, 2);
  bigger.replace(bigger.find(R"({"unit": "root",    "name": "net.0.bias")"), 0,
                 R"({"unit": "root", "name": "extra", "shape": [3]},)");
  std::string reshaped = test::seed_spec_json("flat", 2, 2);
  reshaped.replace(reshaped.find(R"("shape": [16])"), 13, R"("shape": [17])");
  for (auto& l : load_on(io, spec_of(bigger), dir)) {
    REQUIRE_FALSE(l.has_value());
    CHECK(l.error().code == Errc::not_found);
    CHECK(l.error().context.fqn == "extra");
  }
  for (auto& l : load_on(io, spec_of(reshaped), dir)) {
    REQUIRE_FALSE(l.has_value());
    CHECK(l.error().code == Errc::invalid_argument);
    CHECK(l.error().context.fqn == "net.0.bias");
  }
  for (auto& l : load_on(io, spec_of(bigger), dir, {.strict = false})) {
    REQUIRE(l.has_value());
    CHECK(l->report.missing.size() == 4);  // extra, and its exp_avg, exp_avg_sq, step
    CHECK(l->report.missing[0] == "extra");
  }
}
