// Per-unit snapshot fences: a training loop that steps unit by unit, each right after its
// unit's fence opens, saves exactly the state of the step it requested, bit for bit, for
// any step order.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <latch>
#include <optional>
#include <memory>
#include <vector>

#include "corockpt/ckpt/async_checkpointer.hpp"
#include "fixtures/known_model.hpp"
#include "fixtures/known_values.hpp"
#include "tests/ckpt/checkpoint_test_support.hpp"
#include "tests/ckpt/seed_spec.hpp"
#include "tests/support/gated_storage.hpp"
#include "tests/support/local_ranks.hpp"
#include "tests/support/scrambling_device.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/thread_report.hpp"

using namespace corockpt;
using corockpt::test::on_threads;
using corockpt::test::TempDir;
using corockpt::test::TestIo;
using corockpt::test::ThreadReport;

namespace {

ModelSpec spec_of(const std::string& layout, int world, int ep) {
  auto spec = parse_model_spec(test::seed_spec_json(layout, world, ep));
  if (!spec) throw std::runtime_error(spec.error().to_string());
  return *spec;
}

enum class Order { ascending, reverse, rotated };

std::vector<std::uint32_t> order_of(Order order, std::uint32_t units) {
  std::vector<std::uint32_t> out;
  for (std::uint32_t u = 0; u < units; ++u) out.push_back(u);
  if (order == Order::reverse) std::reverse(out.begin(), out.end());
  if (order == Order::rotated && units > 1) std::rotate(out.begin(), out.begin() + 1, out.end());
  return out;
}

// Loads `dir` into a fresh `spec` model on every rank (test::load_on); "" if all hold
// the known values, else the first error or mismatch.
std::string load_mismatch(TestIo& io, const ModelSpec& spec, const std::string& dir) {
  for (auto& loaded : test::load_on(io, spec, dir)) {
    if (!loaded) return loaded.error().to_string();
    if (!loaded->mismatch.empty()) return loaded->mismatch;
  }
  return "";
}

// One rank's model, built on `strand` and filled with known values (and known optimizer
// state, with `state`).
Result<std::unique_ptr<Model>> build_known_model(TestIo& io, Runtime::Strand& strand, const ModelSpec& spec, int rank,
                                                 std::shared_ptr<Communicator> world, bool state) {
  auto model = io.runtime().spawn(strand, Model::build(spec, rank, std::move(world))).get();
  if (!model) return model;
  (*model)->allocate();
  fixtures::fill_known_values(**model);
  if (state) fixtures::fill_known_state(**model);
  return model;
}

// The seed model with 128 x 128 weights (64 KiB each), so that a rank's units are larger
// than the smallest staging budgets.
ModelSpec larger_seed(const std::string& layout) {
  auto spec = parse_model_spec(test::with_weights(test::seed_spec_json(layout, 4, 2), 128));
  if (!spec) throw std::runtime_error(spec.error().to_string());
  return *spec;
}

// Staging budgets: the whole state (a snapshot), 32 KiB (below the largest unit: the save
// streams through 8 buffers of 4 KiB), and 1 byte (the smallest pool, 2 x 4 KiB).
constexpr std::uint64_t budgets[] = {0, 32 << 10, 1};

// Steps each unit of every rank right after its fence, in `order`, then loads the
// checkpoint: "" if it holds the state at the request on every rank.
std::string step_behind_fences(const ModelSpec& spec, Order order, std::uint64_t budget,
                               std::shared_ptr<Device> device) {
  TempDir tmp;
  TestIo io;
  auto world = make_local_world(io.runtime(), 4).value();
  ThreadReport report;
  on_threads(4, report, [&](int r) {
    Runtime::Strand strand = io.runtime().make_strand();
    auto model = io.runtime().spawn(strand, fixtures::known_model(spec, r, world[r], device, /*with_state=*/true)).get();
    THREAD_REQUIRE(report, model.has_value());
    AsyncCheckpointerOptions options{.root = tmp.file("ckpts"), .staging_budget = budget, .device = device};
    options.step_order = order_of(order, static_cast<std::uint32_t>((*model)->instances().size()));
    auto checkpointer = AsyncCheckpointer::create(**model, io.io(), strand, options);
    THREAD_REQUIRE(report, checkpointer.has_value());
    THREAD_CHECK(report, (*checkpointer)->step_order() == options.step_order);
    const CheckpointerStats stats = (*checkpointer)->stats();
    if (budget != 0) THREAD_CHECK(report, stats.staging_bytes <= std::max<std::uint64_t>(budget, 8 << 10));
    if (budget != 0) THREAD_CHECK(report, stats.staging_bytes < stats.state_bytes);
    auto handle = (*checkpointer)->async_save(1);
    THREAD_REQUIRE(report, handle.has_value());
    THREAD_CHECK(report, handle->unit_count() == options.step_order.size());
    // The optimizer steps each unit as soon as its fence opens (a scribble straight into
    // its memory: on the scrambling device too, where it changes what the bytes read as).
    auto chunks = LocalChunks::of(**model);
    THREAD_REQUIRE(report, chunks.has_value());
    for (std::uint32_t unit : (*checkpointer)->step_order()) {
      THREAD_CHECK(report, handle->wait_snapshot(unit).has_value());
      THREAD_CHECK(report, handle->snapshot_ready(unit));
      for (auto& chunk : chunks->chunks()) {
        if (chunk.unit == unit && !chunk.bytes.empty()) std::memset(chunk.bytes.data(), 0x3c, chunk.bytes.size());
      }
    }
    THREAD_CHECK(report, handle->wait_snapshot().has_value());  // the whole-state fence: every unit
    auto saved = handle->wait();
    THREAD_CHECK(report, saved.has_value());
    THREAD_CHECK(report, (*checkpointer)->stop(std::chrono::seconds(60)).has_value());
  });
  if (!report.failures().empty()) return report.failures();
  return load_mismatch(io, spec, tmp.file("ckpts/step-00000001"));
}

}  // namespace

TEST_CASE("AsyncCheckpointer fences: stepping each unit right after its fence saves the requested state bit for bit") {
  for (const std::string layout : {"flat", "per_param"}) {
    const ModelSpec spec = larger_seed(layout);
    for (Order order : {Order::ascending, Order::reverse, Order::rotated}) {
      for (std::uint64_t budget : budgets) {
        INFO(layout << " order " << static_cast<int>(order) << " budget " << budget);
        CHECK(step_behind_fences(spec, order, budget, nullptr) == "");
      }
    }
  }
}

TEST_CASE("AsyncCheckpointer fences: the same with the state in device memory, copied through the device") {
  const ModelSpec spec = larger_seed("flat");
  auto device = std::make_shared<test::ScramblingDevice>();
  for (Order order : {Order::ascending, Order::reverse}) {
    for (std::uint64_t budget : budgets) {
      INFO("order " << static_cast<int>(order) << " budget " << budget);
      CHECK(step_behind_fences(spec, order, budget, device) == "");
    }
  }
}

TEST_CASE("AsyncCheckpointer fences: within a budget, a unit opens once its bytes are staged, not when they are written") {
  // Two units per rank: "small" (1.5 KiB with Adam's moments) first in the step order,
  // "large" (384 KiB). The disk holds every write until each rank has checked its fences:
  // the small unit fits in the 32 KiB pool, so its fence opens; the large one cannot be
  // staged before writes free buffers, so its fence stays shut.
  const ModelSpec spec = *parse_model_spec(R"({
    "world_size": 2,
    "meshes": {"global": {"shape": [2], "dim_names": ["fsdp"]}},
    "units": [{"name": "small", "prefix": "small.", "mesh": "global"},
              {"name": "large", "prefix": "large.", "mesh": "global"}],
    "params": [{"unit": "small", "name": "w", "shape": [16, 16]},
               {"unit": "large", "name": "w", "shape": [256, 256]}],
    "optimizer": {"type": "adam", "lr": 0.1, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
  })");
  TempDir tmp;
  TestIo io;
  test::GatedStorage gated(io.storage());
  CheckpointIo cio{&io.runtime(), &gated, io.io().staging};
  auto world = make_local_world(io.runtime(), 2).value();
  gated.close_gate();
  std::latch checked(2);
  ThreadReport report;
  // Threads 0-1 are the ranks; thread 2 opens the gate once both have checked.
  on_threads(3, report, [&](int r) {
    if (r == 2) {
      checked.wait();
      gated.open_gate();
      return;
    }
    test::Arrival arrival(checked);
    Runtime::Strand strand = io.runtime().make_strand();
    auto model = build_known_model(io, strand, spec, r, world[r], /*state=*/true);
    THREAD_REQUIRE(report, model.has_value());
    auto checkpointer =
        AsyncCheckpointer::create(**model, cio, strand, {.root = tmp.file("ckpts"), .staging_budget = 32 << 10});
    THREAD_REQUIRE(report, checkpointer.has_value());
    THREAD_CHECK(report, (*checkpointer)->stats().staging_bytes == 32 << 10);
    const std::uint32_t small = (*checkpointer)->step_order().front(), large = (*checkpointer)->step_order().back();
    auto handle = (*checkpointer)->async_save(1);
    THREAD_REQUIRE(report, handle.has_value());
    THREAD_CHECK(report, handle->wait_snapshot(small).has_value());
    THREAD_CHECK(report, !handle->snapshot_ready(large));
    THREAD_CHECK(report, !handle->done());
    arrival.arrive();
    THREAD_CHECK(report, handle->wait_snapshot(large).has_value());
    THREAD_CHECK(report, handle->wait().has_value());
    THREAD_CHECK(report, (*checkpointer)->stop(std::chrono::seconds(60)).has_value());
  });
  REQUIRE(report.failures() == "");
  CHECK(load_mismatch(io, spec, tmp.file("ckpts/step-00000001")) == "");
}

TEST_CASE("AsyncCheckpointer fences: a unit past the count and a step order that is not one of each unit are refused") {
  TempDir tmp;
  TestIo io;
  const ModelSpec spec = spec_of("flat", 2, 2);
  auto world = make_local_world(io.runtime(), 2).value();
  ThreadReport report;
  std::vector<std::optional<Error>> wrong_orders(2), past_count(2);
  on_threads(2, report, [&](int r) {
    Runtime::Strand strand = io.runtime().make_strand();
    auto model = build_known_model(io, strand, spec, r, world[r], /*state=*/false);
    THREAD_REQUIRE(report, model.has_value());
    const auto units = static_cast<std::uint32_t>((*model)->instances().size());
    AsyncCheckpointerOptions twice{.root = tmp.file("ckpts")};
    twice.step_order = std::vector<std::uint32_t>(units, 0);
    auto refused = AsyncCheckpointer::create(**model, io.io(), strand, twice);
    if (!refused) wrong_orders[r] = refused.error();
    auto checkpointer = AsyncCheckpointer::create(**model, io.io(), strand, {.root = tmp.file("ckpts")});
    THREAD_REQUIRE(report, checkpointer.has_value());
    auto handle = (*checkpointer)->async_save(1);
    THREAD_REQUIRE(report, handle.has_value());
    auto beyond = handle->wait_snapshot(units);
    if (!beyond) past_count[r] = beyond.error();
    THREAD_CHECK(report, handle->wait().has_value());
    THREAD_CHECK(report, (*checkpointer)->stop(std::chrono::seconds(60)).has_value());
  });
  REQUIRE(report.failures() == "");
  for (int r = 0; r < 2; ++r) {
    REQUIRE(wrong_orders[r].has_value());
    CHECK(wrong_orders[r]->code == Errc::invalid_argument);
    CHECK_THAT(wrong_orders[r]->message, Catch::Contains("is named twice"));
    REQUIRE(past_count[r].has_value());
    CHECK(past_count[r]->code == Errc::invalid_argument);
    CHECK_THAT(past_count[r]->message, Catch::Contains("is not one of the save's"));
  }
}
