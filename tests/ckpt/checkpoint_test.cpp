// Saving and loading checkpoints: round trips across world sizes, layouts and dtypes,
// the commit protocol's refusals, strictness.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <set>

#include "corockpt/ckpt/checkpoint_reader.hpp"
#include "tests/ckpt/checkpoint_test_support.hpp"
#include "tests/ckpt/seed_spec.hpp"
#include "tests/support/temp_dir.hpp"

using namespace corockpt;
using corockpt::test::load_on;
using corockpt::test::odd_spec_json;
using corockpt::test::run_local_ranks;
using corockpt::test::save_known;
using corockpt::test::save_on;
using corockpt::test::spec_of;
using corockpt::test::TempDir;
using corockpt::test::TestIo;

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

TEST_CASE("Checkpoint: replicated chunks read once per group of replicas are passed on, on any layout and world size") {
  TempDir tmp;
  TestIo io;
  const std::string dir = tmp.file("odd");
  save_on(io, spec_of(odd_spec_json("flat", 8, "float32")), dir);
  for (int world : {8, 4, 2}) {
    for (std::string layout : {"flat", "per_param"}) {
      for (std::string dtype : {"float32", "bfloat16"}) {
        const ModelSpec spec = spec_of(odd_spec_json(layout, world, dtype));
        std::uint64_t read[2] = {0, 0};
        for (bool once : {false, true}) {
          auto loaded = load_on(io, spec, dir, {}, once);
          for (int r = 0; r < world; ++r) {
            INFO("loaded on " << world << " " << layout << " " << dtype << " rank " << r << (once ? ", replicas once" : ""));
            INFO((loaded[r] ? std::string() : loaded[r].error().to_string()));
            REQUIRE(loaded[r].has_value());
            CHECK(loaded[r]->mismatch == "");
            CHECK(loaded[r]->checked > 0);
            read[once] += loaded[r]->report.bytes_read;
          }
        }
        INFO(world << " " << layout << " " << dtype << ": " << read[0] << " bytes read by every replica, " << read[1]
                   << " once per group");
        CHECK(read[1] < read[0]);  // HSDP's shards, buffers and steps are held by several ranks
      }
    }
  }
}

TEST_CASE("Checkpoint: with replicas read once, a rank that cannot read its share fails every rank, none hangs") {
  TempDir tmp;
  TestIo io;
  const std::string dir = tmp.file("odd");
  save_on(io, spec_of(odd_spec_json("flat", 4, "float32")), dir);
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    std::filesystem::resize_file(entry.path(), entry.file_size() / 2);  // every file loses its second half
  }
  auto loaded = load_on(io, spec_of(odd_spec_json("flat", 4, "float32")), dir, {}, true);
  int corrupt = 0;
  for (int r = 0; r < 4; ++r) {
    INFO("rank " << r);
    REQUIRE_FALSE(loaded[r].has_value());
    if (loaded[r].error().code == Errc::corrupt) {
      ++corrupt;
    } else {
      CHECK(loaded[r].error().code == Errc::io);
      CHECK_THAT(loaded[r].error().message, Catch::Contains("failed to read its share of the replicated chunks"));
    }
  }
  CHECK(corrupt > 0);
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
  auto metadata = test::run_sync(io.runtime(), read_checkpoint_metadata(io.io(), dir));
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

namespace {

// Saves the spec's model (known values) with `user` as the blob.
Task<SaveReport> save_with_user(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> world, CheckpointIo io,
                                std::string dir, nlohmann::json user) {
  auto model = co_await Model::build(spec, rank, std::move(world));
  if (!model) co_return fail(model.error());
  (*model)->allocate();
  fixtures::fill_known_values(**model);
  SaveOptions options;
  options.user = std::move(user);
  co_return co_await save_checkpoint(**model, io, std::move(dir), std::move(options));
}

}  // namespace

TEST_CASE("Checkpoint: a user blob over 16 MiB is refused on every rank before anything is written; at 16 MiB it saves") {
  TempDir tmp;
  TestIo io;
  const ModelSpec spec = spec_of(test::seed_spec_json("flat", 2, 2));
  // {"s":"xx..."}: 8 bytes of JSON around the string.
  const nlohmann::json at_limit = {{"s", std::string(max_user_blob_bytes - 8, 'x')}};
  const nlohmann::json over_limit = {{"s", std::string(max_user_blob_bytes - 7, 'x')}};
  REQUIRE(at_limit.dump().size() == max_user_blob_bytes);

  const std::string refused = tmp.file("refused");
  auto saved = run_local_ranks<SaveReport>(io.runtime(), 2, [&](int r, std::shared_ptr<Communicator> w) {
    return save_with_user(spec, r, std::move(w), io.io(), refused, over_limit);
  });
  for (auto& s : saved) {
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().code == Errc::invalid_argument);
    CHECK_THAT(s.error().message, Catch::Contains("user blob is " + std::to_string(max_user_blob_bytes + 1) + " bytes"));
  }
  CHECK(std::filesystem::is_empty(tmp.path()));  // no checkpoint, no temporary directory

  const std::string kept = tmp.file("kept");
  saved = run_local_ranks<SaveReport>(io.runtime(), 2, [&](int r, std::shared_ptr<Communicator> w) {
    return save_with_user(spec, r, std::move(w), io.io(), kept, at_limit);
  });
  for (auto& s : saved) {
    INFO((s ? std::string() : s.error().to_string()));
    REQUIRE(s.has_value());
  }
  for (auto& l : load_on(io, spec, kept)) {
    REQUIRE(l.has_value());
    CHECK(l->report.user == at_limit);
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
