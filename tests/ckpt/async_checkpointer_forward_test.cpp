// What forward changes: a buffer that the training loop's forward mutates (BatchNorm's
// running statistics, a counter; ParamSpec::forward_mutates, the default for buffers) is
// captured when the save is requested, so the forward that runs before the snapshot
// cannot change what is saved; the per-unit fences protect only what the optimizer step
// changes, and a buffer with forward_mutates false is copied behind its unit's fence.
//
// Every test makes "forward ran before the snapshot copied" certain rather than likely:
// the first save's persist is held at a closed storage gate, so the second save (policy
// wait) cannot start its snapshot until every rank has run its forward and the gate opens.
#include <catch2/catch.hpp>

#include <cstring>
#include <latch>
#include <memory>
#include <string>
#include <vector>

#include "corockpt/ckpt/async_checkpointer.hpp"
#include "corockpt/ckpt/load.hpp"
#include "fixtures/known_model.hpp"
#include "fixtures/known_values.hpp"
#include "tests/support/gated_storage.hpp"
#include "tests/support/local_ranks.hpp"
#include "tests/support/scrambling_device.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/thread_report.hpp"

using namespace corockpt;
using corockpt::test::GatedStorage;
using corockpt::test::on_threads;
using corockpt::test::ScramblingDevice;
using corockpt::test::TempDir;
using corockpt::test::TestIo;
using corockpt::test::ThreadReport;

namespace {

constexpr int world_size = 4;
constexpr std::byte junk{0x5a};

// Two units on 4 ranks: `bn` with a weight and two buffers forward mutates (one by
// default, one said so), `head` with a weight and a buffer only the optimizer step
// changes (an exponential moving average of the weights, say).
ModelSpec forward_spec(const std::string& layout) {
  auto spec = parse_model_spec(R"({"world_size": 4,
    "meshes": {"all": {"shape": [4], "dim_names": ["fsdp"]}},
    "units": [{"name": "bn", "prefix": "bn.", "mesh": "all", "layout": ")" +
                               layout + R"("},
              {"name": "head", "prefix": "head.", "mesh": "all", "layout": ")" +
                               layout + R"("}],
    "params": [{"unit": "bn", "name": "weight", "shape": [6, 4]},
               {"unit": "bn", "name": "running_mean", "shape": [4], "buffer": true},
               {"unit": "bn", "name": "num_batches_tracked", "shape": [], "dtype": "int64", "buffer": true,
                "forward_mutates": true},
               {"unit": "head", "name": "weight", "shape": [5, 3]},
               {"unit": "head", "name": "ema", "shape": [3], "buffer": true, "forward_mutates": false}],
    "optimizer": {"type": "adam"}})");
  if (!spec) throw std::runtime_error(spec.error().to_string());
  return *spec;
}

// Sets every byte of `bytes` to junk: through `device` for memory in its space.
Result<void> scribble(Runtime& runtime, Device* device, std::span<std::byte> bytes, MemorySpace space) {
  if (bytes.empty()) return {};
  if (space == MemorySpace::host) {
    std::memset(bytes.data(), static_cast<int>(junk), bytes.size());
    return {};
  }
  std::vector<std::byte> host(bytes.size(), junk);
  return runtime.spawn(device->copy_to_device(bytes, host)).get();
}

// Scribbles over every chunk of `chunks` that `which` picks.
template <class Which>
Result<void> scribble_chunks(Runtime& runtime, Device* device, LocalChunks& chunks, Which which) {
  for (auto& chunk : chunks.chunks()) {
    if (!which(chunk)) continue;
    if (auto ok = scribble(runtime, device, chunk.bytes, chunk.space); !ok) return ok;
  }
  return {};
}

struct Run {
  std::shared_ptr<ScramblingDevice> device;  // null: the model lies in host memory
  bool ema_in_forward = false;               // forward also changes head.ema, whose spec says it does not
};

// On 4 ranks: saves step 1 (its persist held at the gate), asks for step 2 (which waits),
// runs "forward" (scribbles over the buffers forward mutates, and head.ema too with
// `ema_in_forward`), opens the gate once every rank has, then steps each unit right after
// its fence (scribbling over all its chunks but those captured at the request).
void run_two_saves(TestIo& io, const ModelSpec& spec, const std::string& root, const Run& run, ThreadReport& report) {
  GatedStorage gated(io.storage());
  CheckpointIo cio{&io.runtime(), &gated, io.io().staging};
  auto world = make_local_world(io.runtime(), world_size).value();
  gated.close_gate();
  std::latch forward_done(world_size);
  on_threads(world_size + 1, report, [&](int r) {
    if (r == world_size) {  // the gate keeper
      forward_done.wait();
      gated.open_gate();
      return;
    }
    test::Arrival arrival(forward_done);
    Runtime& runtime = io.runtime();
    Runtime::Strand strand = runtime.make_strand();
    auto model = runtime.spawn(strand, fixtures::known_model(spec, r, world[r], run.device, true)).get();
    THREAD_REQUIRE(report, model.has_value());
    AsyncCheckpointerOptions options{.root = root, .device = run.device};
    auto checkpointer = AsyncCheckpointer::create(**model, cio, strand, options);
    THREAD_REQUIRE(report, checkpointer.has_value());
    auto chunks = LocalChunks::of(**model);
    THREAD_REQUIRE(report, chunks.has_value());
    Device* device = run.device.get();

    auto first = (*checkpointer)->async_save(1);
    THREAD_REQUIRE(report, first.has_value());
    THREAD_REQUIRE(report, first->wait_snapshot().has_value());  // its persist now waits at the gate
    auto second = (*checkpointer)->async_save(2);
    THREAD_REQUIRE(report, second.has_value());
    // Forward, before any fence of the second save.
    THREAD_CHECK(report, scribble_chunks(runtime, device, *chunks, [&](const LocalChunk& c) {
                           return c.at_request || (run.ema_in_forward && c.name == "head.ema");
                         }).has_value());
    THREAD_CHECK(report, !second->snapshot_ready());  // certain: the first save holds it back
    arrival.arrive();
    // The optimizer step, unit by unit, each right after its fence.
    for (std::uint32_t unit : (*checkpointer)->step_order()) {
      THREAD_CHECK(report, second->wait_snapshot(unit).has_value());
      THREAD_CHECK(report, scribble_chunks(runtime, device, *chunks, [&](const LocalChunk& c) {
                             return c.unit == unit && !c.at_request;
                           }).has_value());
    }
    THREAD_CHECK(report, first->wait().has_value());
    THREAD_CHECK(report, second->wait().has_value());
    THREAD_CHECK(report, (*checkpointer)->stats().waited == 1);
    THREAD_CHECK(report, (*checkpointer)->stop(std::chrono::seconds(60)).has_value());
  });
}

struct Loaded {
  std::string mismatch;              // the first known value that differs, in all chunks but head.ema
  std::string ema_mismatch;          // the same in head.ema
  std::vector<std::byte> ema;        // head.ema as loaded
  std::int64_t buffers_checked = 0;  // elements of the buffers forward mutates, all matching
};

// Loads `dir` into a fresh (zeroed) host model of `spec` on `rank`.
Task<Loaded> load_model(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> world, CheckpointIo io,
                        std::string dir) {
  auto model = co_await Model::build(spec, rank, std::move(world));
  if (!model) co_return fail(model.error());
  (*model)->allocate();
  auto loaded = co_await load_checkpoint(**model, io, std::move(dir));
  if (!loaded) co_return fail(loaded.error());
  auto chunks = LocalChunks::of(**model);
  if (!chunks) co_return fail(chunks.error());
  Loaded out;
  std::vector<LocalChunk> known, ema, buffers;
  for (const auto& chunk : chunks->chunks()) {
    if (chunk.name == "head.ema") {
      out.ema.assign(chunk.bytes.begin(), chunk.bytes.end());
      ema.push_back(chunk);
    } else {
      known.push_back(chunk);
      if (chunk.at_request) buffers.push_back(chunk);
    }
  }
  auto check = fixtures::check_known_values(known);
  if (!check.ok()) out.mismatch = *check.first_mismatch;
  auto ema_check = fixtures::check_known_values(ema);
  if (!ema_check.ok()) out.ema_mismatch = *ema_check.first_mismatch;
  auto buffers_check = fixtures::check_known_values(buffers);
  if (buffers_check.ok()) out.buffers_checked = buffers_check.checked;
  co_return out;
}

std::vector<Result<Loaded>> load_on(TestIo& io, const ModelSpec& spec, const std::string& dir) {
  return test::run_local_ranks<Loaded>(io.runtime(), world_size, [&](int r, std::shared_ptr<Communicator> w) {
    return load_model(spec, r, std::move(w), io.io(), dir);
  });
}

bool all_junk(const std::vector<std::byte>& bytes) {
  for (std::byte b : bytes) {
    if (b != junk) return false;
  }
  return !bytes.empty();
}

// The step-2 checkpoint holds the known values everywhere: head.ema too, unless `ema_junk`
// (then it holds what forward wrote into it).
void check_step_2(TestIo& io, const ModelSpec& spec, const std::string& root, bool ema_junk) {
  for (const auto& loaded : load_on(io, spec, root + "/step-00000002")) {
    INFO((loaded ? loaded->mismatch : loaded.error().to_string()));
    REQUIRE(loaded.has_value());
    CHECK(loaded->mismatch == "");
    CHECK(loaded->buffers_checked == 5);  // running_mean's 4 and num_batches_tracked's 1
    if (ema_junk) {
      CHECK(all_junk(loaded->ema));
    } else {
      CHECK(loaded->ema_mismatch == "");
    }
  }
}

}  // namespace

TEST_CASE("AsyncCheckpointer forward: a buffer forward mutates is saved as it was when the save was requested") {
  for (const std::string layout : {"flat", "per_param"}) {
    INFO(layout);
    TempDir tmp;
    TestIo io;
    const ModelSpec spec = forward_spec(layout);
    const std::string root = tmp.file("ckpts");
    ThreadReport report;
    run_two_saves(io, spec, root, {}, report);
    REQUIRE(report.failures() == "");
    // head.ema was changed only after head's fence: the checkpoint holds its value before.
    check_step_2(io, spec, root, /*ema_junk=*/false);
  }
}

TEST_CASE(
    "AsyncCheckpointer forward: a buffer with forward_mutates false is copied behind its unit's fence, not at the "
    "request") {
  TempDir tmp;
  TestIo io;
  const ModelSpec spec = forward_spec("per_param");
  const std::string root = tmp.file("ckpts");
  ThreadReport report;
  // A forward that changes head.ema though its spec says it does not: the snapshot copies
  // it later, behind head's fence, and so saves what forward wrote.
  run_two_saves(io, spec, root, {.ema_in_forward = true}, report);
  REQUIRE(report.failures() == "");
  check_step_2(io, spec, root, /*ema_junk=*/true);
}

TEST_CASE(
    "AsyncCheckpointer forward: on a device, the buffers forward mutates are captured through it at the request") {
  for (const std::string layout : {"flat", "per_param"}) {
    INFO(layout);
    TempDir tmp;
    TestIo io;
    const ModelSpec spec = forward_spec(layout);
    const std::string root = tmp.file("ckpts");
    auto device = std::make_shared<ScramblingDevice>();
    ThreadReport report;
    run_two_saves(io, spec, root, {.device = device}, report);
    REQUIRE(report.failures() == "");
    CHECK(device->ordered >= 2 * world_size);  // each request ordered the device after its compute
    check_step_2(io, spec, root, /*ema_junk=*/false);
  }
}

TEST_CASE("AsyncCheckpointer forward: chunks given with at_request are captured at the request, the others later") {
  TempDir tmp;
  TestIo io;
  GatedStorage gated(io.storage());
  CheckpointIo cio{&io.runtime(), &gated, io.io().staging};
  auto world = make_local_world(io.runtime(), 1).value();
  std::vector<float> weight{1, 2, 3, 4}, stats{5, 6};
  auto chunk = [](std::string name, std::vector<float>& values, bool at_request) {
    const auto n = static_cast<std::int64_t>(values.size());
    return LocalChunk{.name = std::move(name),
                      .dtype = DType::float32,
                      .shape = {n},
                      .box = Box{{0}, {n}},
                      .bytes = std::as_writable_bytes(std::span(values)),
                      .writer = true,
                      .at_request = at_request};
  };
  SaveScope scope{.world = world[0], .rank = 0, .world_size = 1};
  auto made = AsyncCheckpointer::create(scope, {chunk("w", weight, false), chunk("stats", stats, true)}, cio,
                                        io.runtime().make_strand(), {.root = tmp.file("ckpts")});
  REQUIRE(made);
  auto& checkpointer = **made;
  gated.close_gate();
  const auto user = nlohmann::json::object();
  auto first =
      checkpointer.async_save(1, user, SaveInputs{{chunk("w", weight, false), chunk("stats", stats, true)}, {}});
  REQUIRE(first);
  REQUIRE(first->wait_snapshot());  // its persist now waits at the gate
  auto second =
      checkpointer.async_save(2, user, SaveInputs{{chunk("w", weight, false), chunk("stats", stats, true)}, {}});
  REQUIRE(second);
  CHECK_FALSE(second->snapshot_ready());
  // Both change before the second snapshot: stats was captured already, w was not.
  for (float& v : stats) v = -v;
  for (float& v : weight) v = -v;
  gated.open_gate();
  REQUIRE(first->wait());
  REQUIRE(second->wait());
  REQUIRE(checkpointer.stop(std::chrono::seconds(10)));

  std::vector<float> loaded_w(4), loaded_stats(2);
  std::vector<LocalChunk> target{chunk("w", loaded_w, false), chunk("stats", loaded_stats, false)};
  REQUIRE(io.runtime().spawn(load_chunks(target, io.io(), tmp.file("ckpts/step-00000002"))).get());
  CHECK(loaded_stats == std::vector<float>{5, 6});
  CHECK(loaded_w == std::vector<float>{-1, -2, -3, -4});
}
