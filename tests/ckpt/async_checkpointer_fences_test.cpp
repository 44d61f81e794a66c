// Per-unit snapshot fences: a training loop that steps unit by unit, each right after its
// unit's fence opens, saves exactly the state of the step it requested, bit for bit, for
// any step order.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <optional>
#include <memory>
#include <vector>

#include "corockpt/ckpt/async_checkpointer.hpp"
#include "fixtures/known_values.hpp"
#include "tests/ckpt/checkpoint_test_support.hpp"
#include "tests/ckpt/seed_spec.hpp"
#include "tests/support/local_ranks.hpp"
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

}  // namespace

TEST_CASE("AsyncCheckpointer fences: stepping each unit right after its fence saves the requested state bit for bit") {
  for (const std::string layout : {"flat", "per_param"}) {
    for (Order order : {Order::ascending, Order::reverse, Order::rotated}) {
      INFO(layout << " order " << static_cast<int>(order));
      TempDir tmp;
      TestIo io;
      const ModelSpec spec = spec_of(layout, 4, 2);
      auto world = make_local_world(io.runtime(), 4).value();
      ThreadReport report;
      on_threads(4, report, [&](int r) {
        Runtime::Strand strand = io.runtime().make_strand();
        auto model = build_known_model(io, strand, spec, r, world[r], /*state=*/true);
        THREAD_REQUIRE(report, model.has_value());
        AsyncCheckpointerOptions options{.root = tmp.file("ckpts")};
        options.step_order = order_of(order, static_cast<std::uint32_t>((*model)->instances().size()));
        auto checkpointer = AsyncCheckpointer::create(**model, io.io(), strand, options);
        THREAD_REQUIRE(report, checkpointer.has_value());
        THREAD_CHECK(report, (*checkpointer)->step_order() == options.step_order);
        auto handle = (*checkpointer)->async_save(1);
        THREAD_REQUIRE(report, handle.has_value());
        THREAD_CHECK(report, handle->unit_count() == options.step_order.size());
        // The optimizer steps each unit as soon as its fence opens.
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
      REQUIRE(report.failures() == "");
      CHECK(load_mismatch(io, spec, tmp.file("ckpts/step-00000001")) == "");
    }
  }
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
