// AsyncCheckpointer created from chunks of the caller's own (what the Python
// AsyncCheckpointer gives it: tensors of a PyTorch state dict, not a Model): each save
// brings its chunks and objects; the snapshot fence; memory that moves between saves; a
// layout that changed is refused by name.
#include <catch2/catch.hpp>

#include <numeric>
#include <thread>

#include "corockpt/ckpt/async_checkpointer.hpp"
#include "corockpt/ckpt/checkpoint_directory.hpp"
#include "corockpt/ckpt/checkpoint_reader.hpp"
#include "corockpt/ckpt/load.hpp"
#include "tests/support/local_ranks.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/thread_report.hpp"

using namespace corockpt;
using corockpt::test::TempDir;
using corockpt::test::TestIo;

namespace {

/// Rank r's half of a [4, 3] float32 tensor "w" (rows 2r, 2r+1), in `values`.
LocalChunk half_of_w(std::vector<float>& values, int r) {
  return LocalChunk{.name = "w", .dtype = DType::float32, .shape = {4, 3}, .box = Box{{2 * r, 0}, {2, 3}},
                    .bytes = std::as_writable_bytes(std::span(values)), .writer = true};
}

}  // namespace

TEST_CASE("AsyncCheckpointer from chunks: two ranks save their halves and objects, each save from its own memory") {
  TempDir tmp;
  TestIo io;
  auto world = make_local_world(io.runtime(), 2);
  REQUIRE(world);
  std::vector<std::vector<float>> first(2, std::vector<float>(6)), second(2, std::vector<float>(6));
  std::vector<std::unique_ptr<AsyncCheckpointer>> checkpointers;
  for (int r = 0; r < 2; ++r) {
    std::iota(first[r].begin(), first[r].end(), 6.0f * r);
    std::iota(second[r].begin(), second[r].end(), 100.0f + 6.0f * r);
    SaveScope scope{.world = (*world)[r], .rank = r, .world_size = 2};
    auto made = AsyncCheckpointer::create(scope, {half_of_w(first[r], r)}, io.io(), io.runtime().make_strand(),
                                          {.root = tmp.file("ckpts"), .keep_last = 1});
    REQUIRE(made);
    checkpointers.push_back(std::move(*made));
  }
  // The layout-only call is refused: this checkpointer needs each save's inputs.
  auto no_inputs = checkpointers[0]->async_save(1);
  REQUIRE_FALSE(no_inputs);
  CHECK(no_inputs.error().code == Errc::invalid_argument);

  for (int save = 0; save < 2; ++save) {
    test::ThreadReport report;
    test::on_threads(2, report, [&](int r) {
      auto& memory = save == 0 ? first[r] : second[r];
      // Each object is given by one rank (two ranks giving one name fail the commit).
      SaveInputs inputs{{half_of_w(memory, r)}, {}};
      if (r == 0) inputs.objects.emplace_back("epoch", "e" + std::to_string(save));
      if (r == 1) inputs.objects.emplace_back("optim.param_groups.0.lr", std::string("\x80\x04lr", 4));
      auto handle = checkpointers[r]->async_save(10 + save, nlohmann::json{{"step", 10 + save}}, std::move(inputs));
      THREAD_REQUIRE(report, handle.has_value());
      THREAD_REQUIRE(report, handle->wait_snapshot().has_value());
      std::fill(memory.begin(), memory.end(), -1.0f);  // the optimizer step, after the fence
      THREAD_CHECK(report, handle->wait().has_value());
    });
    INFO("save " << save);
    REQUIRE(report.failures() == "");
  }
  for (auto& c : checkpointers) REQUIRE(c->stop(std::chrono::seconds(10)));

  // keep_last 1: only the second save's checkpoint, holding the second memory's values.
  auto latest = io.runtime().spawn(latest_checkpoint(io.io(), tmp.file("ckpts"))).get();
  REQUIRE(latest);
  REQUIRE(latest->has_value());
  CHECK((*latest)->step == 11);
  CHECK_FALSE(std::filesystem::exists(tmp.file("ckpts/step-00000010")));
  std::vector<float> all(12, 0.0f);
  std::vector<LocalChunk> target{LocalChunk{.name = "w", .dtype = DType::float32, .shape = {4, 3},
                                            .box = Box{{0, 0}, {4, 3}}, .bytes = std::as_writable_bytes(std::span(all))}};
  REQUIRE(io.runtime().spawn(load_chunks(target, io.io(), (*latest)->path)).get());
  std::vector<float> expected(12);
  std::iota(expected.begin(), expected.begin() + 6, 100.0f);
  std::iota(expected.begin() + 6, expected.end(), 106.0f);
  CHECK(all == expected);
  auto reader = io.runtime().spawn(CheckpointReader::open(io.io(), (*latest)->path)).get();
  REQUIRE(reader);
  auto lr = io.runtime().spawn((*reader)->read_object("optim.param_groups.0.lr")).get();
  REQUIRE(lr);
  CHECK(lr->size() == 4);
  auto epoch = io.runtime().spawn((*reader)->read_object("epoch")).get();
  REQUIRE(epoch);
  CHECK(std::string(reinterpret_cast<const char*>(epoch->data()), epoch->size()) == "e1");
}

TEST_CASE("AsyncCheckpointer from chunks: a save whose chunks differ from the layout is refused naming the tensor") {
  TempDir tmp;
  TestIo io;
  auto world = make_local_world(io.runtime(), 1);
  REQUIRE(world);
  std::vector<float> memory(6), longer(9);
  SaveScope scope{.world = (*world)[0], .rank = 0, .world_size = 1};
  LocalChunk layout{.name = "w", .dtype = DType::float32, .shape = {2, 3}, .box = Box{{0, 0}, {2, 3}},
                    .bytes = std::as_writable_bytes(std::span(memory)), .writer = true};
  auto made = AsyncCheckpointer::create(scope, {layout}, io.io(), io.runtime().make_strand(), {.root = tmp.file("c")});
  REQUIRE(made);
  LocalChunk grown{.name = "w", .dtype = DType::float32, .shape = {3, 3}, .box = Box{{0, 0}, {3, 3}},
                   .bytes = std::as_writable_bytes(std::span(longer)), .writer = true};
  auto refused = (*made)->async_save(1, nlohmann::json::object(), SaveInputs{{grown}, {}});
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == Errc::invalid_argument);
  CHECK(refused.error().context.fqn == "w");
  CHECK((*made)->stats().requested == 0);
}
