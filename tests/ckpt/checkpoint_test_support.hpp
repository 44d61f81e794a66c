#pragma once
// Helpers of the checkpoint tests (round trips, crash consistency, corruption): models
// from specs, saving known values on N in-process ranks, loading and checking them.
#include <catch2/catch.hpp>

#include <cstring>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "corockpt/ckpt/collector.hpp"
#include "corockpt/ckpt/load.hpp"
#include "corockpt/ckpt/save.hpp"
#include "corockpt/ckpt/verify.hpp"
#include "fixtures/known_values.hpp"
#include "tests/support/local_ranks.hpp"
#include "tests/support/run_sync.hpp"

namespace corockpt::test {

inline ModelSpec spec_of(const std::string& json) {
  auto spec = parse_model_spec(json);
  if (!spec) throw std::runtime_error(spec.error().to_string());
  return *spec;
}

// Odd shapes (flat ranges cut rows), a 3-d param, a 0-size dim, a buffer, a frozen
// param, HSDP (replicated shards) and experts, on `world` ranks.
inline std::string odd_spec_json(const std::string& layout, int world, const std::string& dtype) {
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
inline Task<SaveReport> save_known(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> world,
                                   CheckpointIo io, std::string dir) {
  auto model = co_await Model::build(spec, rank, std::move(world));
  if (!model) co_return fail(model.error());
  (*model)->allocate();
  fixtures::fill_known_values(**model);
  fixtures::fill_known_state(**model);
  SaveOptions options;
  options.user["step"] = 7;
  co_return co_await save_checkpoint(**model, io, std::move(dir), std::move(options));
}

// Builds the spec's model (zeroed), loads `dir` into it and checks every local value,
// then the full state dict too (rank 0 holds it).
inline Task<Loaded> load_and_check(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> world,
                                   CheckpointIo io, std::string dir, LoadOptions options) {
  auto model = co_await Model::build(spec, rank, std::move(world));
  if (!model) co_return fail(model.error());
  (*model)->allocate();
  fixtures::fill_known_values(**model);
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
  auto local = fixtures::check_known_values(chunks->chunks());
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
  auto full_check = fixtures::check_known_values(whole);
  out.checked += full_check.checked;
  if (!full_check.ok()) out.mismatch = "full state dict: " + *full_check.first_mismatch;
  co_return out;
}

// Saves the spec's known state to `dir` on its world of in-process ranks: every rank
// must succeed.
inline void save_on(TestIo& io, const ModelSpec& spec, const std::string& dir) {
  auto saved = run_local_ranks<SaveReport>(io.runtime(), spec.world_size, [&](int r, std::shared_ptr<Communicator> w) {
    return save_known(spec, r, std::move(w), io.io(), dir);
  });
  for (auto& s : saved) {
    INFO((s ? std::string() : s.error().to_string()));
    REQUIRE(s.has_value());
  }
  CHECK(saved[0]->total_bytes > 0);
}

// The same, returning every rank's outcome (for saves that may fail).
inline std::vector<Result<SaveReport>> try_save_on(TestIo& io, const ModelSpec& spec, const std::string& dir) {
  return run_local_ranks<SaveReport>(io.runtime(), spec.world_size, [&](int r, std::shared_ptr<Communicator> w) {
    return save_known(spec, r, std::move(w), io.io(), dir);
  });
}

// `replicas_once`: LoadOptions::replicas is each rank's world.
inline std::vector<Result<Loaded>> load_on(TestIo& io, const ModelSpec& spec, const std::string& dir,
                                           LoadOptions options = {}, bool replicas_once = false) {
  return run_local_ranks<Loaded>(io.runtime(), spec.world_size, [&](int r, std::shared_ptr<Communicator> w) {
    LoadOptions mine = options;
    if (replicas_once) mine.replicas = w;
    return load_and_check(spec, r, std::move(w), io.io(), dir, std::move(mine));
  });
}

// verify_checkpoint's report on `dir` (it must run).
inline VerifyReport verify_on(TestIo& io, const std::string& dir) {
  auto report = run_sync(io.runtime(), verify_checkpoint(io.io(), dir));
  INFO((report ? std::string() : report.error().to_string()));
  REQUIRE(report.has_value());
  return *report;
}

// A report's problems, one a line: "[file] [tensor] message".
inline std::string problems_text(const VerifyReport& report) {
  std::ostringstream out;
  for (const auto& p : report.problems) out << "  [" << p.file << "] [" << p.tensor << "] " << p.message << "\n";
  return out.str();
}

}  // namespace corockpt::test
