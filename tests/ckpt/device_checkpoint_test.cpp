// Checkpoints of a model whose memory lies on a device: snapshots, saves and loads copy
// through the device and never touch its memory directly. The device is a test double
// (tests/support/scrambling_device.hpp) whose memory holds scrambled bytes, so a direct
// read or write shows as wrong values.
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "corockpt/ckpt/async_checkpointer.hpp"
#include "corockpt/ckpt/collector.hpp"
#include "corockpt/ckpt/load.hpp"
#include "corockpt/ckpt/save.hpp"
#include "fixtures/known_model.hpp"
#include "fixtures/known_values.hpp"
#include "tests/ckpt/checkpoint_test_support.hpp"
#include "tests/ckpt/seed_spec.hpp"
#include "tests/support/local_ranks.hpp"
#include "tests/support/scrambling_device.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/thread_report.hpp"

using namespace corockpt;
using corockpt::test::ScramblingDevice;
using corockpt::test::TempDir;
using corockpt::test::TestIo;

namespace {

ModelSpec seed(int world, int ep) {
  auto spec = parse_model_spec(test::seed_spec_json("flat", world, ep));
  if (!spec) throw std::runtime_error(spec.error().to_string());
  return *spec;
}

// Loads `dir` into fresh host models on every rank and checks each holds the known values.
void check_loads_known_values(TestIo& io, const ModelSpec& spec, const std::string& dir) {
  for (auto& loaded : test::load_on(io, spec, dir)) {
    INFO((loaded ? loaded->mismatch : loaded.error().to_string()));
    CHECK((loaded && loaded->mismatch.empty()));
  }
}

}  // namespace

TEST_CASE("Device checkpoints: an async save of a model in device memory snapshots through the device into its staging memory") {
  TempDir tmp;
  TestIo io;
  const ModelSpec spec = seed(4, 2);
  auto device = std::make_shared<ScramblingDevice>();
  auto world = make_local_world(io.runtime(), 4).value();
  std::vector<std::unique_ptr<Model>> models(4);
  std::vector<std::unique_ptr<AsyncCheckpointer>> checkpointers(4);
  std::vector<Result<SaveReport>> results(4, fail(Errc::internal, "not run"));
  test::ThreadReport report;
  test::on_threads(4, report, [&](int r) {
    Runtime::Strand strand = io.runtime().make_strand();
    auto model = io.runtime().spawn(strand, fixtures::known_model(spec, r, world[r], device, true)).get();
    THREAD_REQUIRE(report, model.has_value());
    models[r] = std::move(*model);
    THREAD_CHECK(report, models[r]->memory_space() == MemorySpace::cuda);
    auto checkpointer =
        AsyncCheckpointer::create(*models[r], io.io(), strand, {.root = tmp.file("ckpts"), .device = device});
    THREAD_REQUIRE(report, checkpointer.has_value());
    checkpointers[r] = std::move(*checkpointer);
    auto handle = checkpointers[r]->async_save(1);
    THREAD_REQUIRE(report, handle.has_value());
    THREAD_REQUIRE(report, handle->wait_snapshot().has_value());
    results[r] = handle->wait();
  });
  CHECK(report.failures() == "");
  for (auto& r : results) {
    INFO((r ? std::string("ok") : r.error().to_string()));
    REQUIRE(r.has_value());
  }
  CHECK(device->ordered >= 4);            // every rank's snapshot waited for the queued compute
  CHECK(device->staging_allocators >= 4);  // snapshot memory came from the device's allocator
  check_loads_known_values(io, spec, tmp.file("ckpts/step-00000001"));
}

// How a save or load learns the device: SaveOptions/LoadOptions::device, the model's own
// (Model::move_to set it), or not at all (the model forgot it: an error).
enum class DeviceGiven { in_options, by_model, none };

TEST_CASE("Device checkpoints: save_checkpoint copies device memory through the device and refuses without one") {
  TempDir tmp;
  TestIo io;
  const ModelSpec spec = seed(4, 2);
  auto device = std::make_shared<ScramblingDevice>();
  for (DeviceGiven given : {DeviceGiven::in_options, DeviceGiven::by_model, DeviceGiven::none}) {
    const bool with_device = given != DeviceGiven::none;
    const std::string dir = tmp.file("given-" + std::to_string(static_cast<int>(given)));
    auto results = test::run_local_ranks<SaveReport>(io.runtime(), 4, [&](int r, std::shared_ptr<Communicator> w) {
      return [](const ModelSpec& s, int rank, std::shared_ptr<Communicator> world, std::shared_ptr<Device> d,
                DeviceGiven give, CheckpointIo c, std::string where) -> Task<SaveReport> {
        auto model = co_await fixtures::known_model(s, rank, std::move(world), d, true);
        if (!model) co_return fail(model.error());
        SaveOptions options;
        if (give != DeviceGiven::by_model) (*model)->set_device(nullptr);
        if (give == DeviceGiven::in_options) options.device = d;
        co_return co_await save_checkpoint(**model, c, std::move(where), std::move(options));
      }(spec, r, std::move(w), device, given, io.io(), dir);
    });
    for (auto& r : results) {
      INFO((r ? std::string("ok") : r.error().to_string()));
      if (with_device) {
        REQUIRE(r.has_value());
      } else {
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().to_string().find("SaveOptions::device") != std::string::npos);
      }
    }
    if (with_device) {
      check_loads_known_values(io, spec, dir);
    } else {
      CHECK_FALSE(std::filesystem::exists(dir));  // nothing committed
    }
  }
}

TEST_CASE("Device checkpoints: load_checkpoint fills device memory through the device, on another world size") {
  TempDir tmp;
  TestIo io;
  test::save_on(io, seed(4, 2), tmp.file("ckpt"));
  const ModelSpec spec = seed(2, 2);
  auto device = std::make_shared<ScramblingDevice>();
  for (DeviceGiven given : {DeviceGiven::in_options, DeviceGiven::by_model, DeviceGiven::none}) {
    const bool with_device = given != DeviceGiven::none;
    auto results = test::run_local_ranks<std::int64_t>(io.runtime(), 2, [&](int r, std::shared_ptr<Communicator> w) {
      return [](const ModelSpec& s, int rank, std::shared_ptr<Communicator> world, std::shared_ptr<Device> d,
                DeviceGiven give, CheckpointIo c, std::string dir) -> Task<std::int64_t> {
        auto model = co_await Model::build(s, rank, std::move(world));
        if (!model) co_return fail(model.error());
        (*model)->allocate();  // zeros for the optimizer states: the load must fill them
        fixtures::fill_known_values(**model);
        if (auto moved = co_await (*model)->move_to(d); !moved) co_return fail(moved.error());
        LoadOptions options;
        if (give != DeviceGiven::by_model) (*model)->set_device(nullptr);
        if (give == DeviceGiven::in_options) options.device = d;
        auto loaded = co_await load_checkpoint(**model, c, std::move(dir), std::move(options));
        if (!loaded) co_return fail(loaded.error());
        // Read the device memory back through the device and check it (the steps too:
        // their chunks are made from the params' slots, which the load set).
        auto chunks = LocalChunks::of(**model);
        if (!chunks) co_return fail(chunks.error());
        std::vector<std::vector<std::byte>> host;
        for (auto& chunk : chunks->chunks()) {
          if (chunk.space == MemorySpace::host || chunk.bytes.empty()) continue;
          std::span<std::byte> copy = host.emplace_back(chunk.bytes.size());
          if (auto ok = co_await d->copy_to_host(copy, chunk.bytes); !ok) co_return fail(ok.error());
          chunk.bytes = copy;
          chunk.space = MemorySpace::host;
        }
        auto check = fixtures::check_known_values(chunks->chunks());
        if (!check.ok()) co_return fail(Errc::corrupt, *check.first_mismatch);
        co_return check.checked;
      }(spec, r, std::move(w), device, given, io.io(), tmp.file("ckpt"));
    });
    for (auto& r : results) {
      if (with_device) {
        INFO((r ? std::string("ok") : r.error().to_string()));
        REQUIRE(r.has_value());
        CHECK(*r > 0);
      } else {
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().to_string().find("LoadOptions::device") != std::string::npos);
      }
    }
  }
}
