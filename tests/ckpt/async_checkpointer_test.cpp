// AsyncCheckpointer: the snapshot fence, failures that leave training running, a
// coroutine training loop, the busy policies, a rank that stops answering, retention.
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <latch>
#include <thread>

#include "corockpt/ckpt/async_checkpointer.hpp"
#include "corockpt/ckpt/checkpoint_directory.hpp"
#include "corockpt/ckpt/load.hpp"
#include "fixtures/known_values.hpp"
#include "tests/ckpt/seed_spec.hpp"
#include "tests/support/gated_storage.hpp"
#include "tests/support/local_ranks.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/thread_report.hpp"

using namespace corockpt;
using corockpt::test::GatedStorage;
using corockpt::test::on_threads;
using corockpt::test::ThreadReport;
using corockpt::test::TempDir;
using corockpt::test::TestIo;

namespace {

using namespace std::chrono_literals;

ModelSpec seed(int world, int ep) {
  auto spec = parse_model_spec(test::seed_spec_json("flat", world, ep));
  if (!spec) throw std::runtime_error(spec.error().to_string());
  return *spec;
}

// One rank of a training loop on its own thread (as a plain, synchronous loop is).
struct Rank {
  std::unique_ptr<Model> model;
  std::unique_ptr<AsyncCheckpointer> checkpointer;
};

Rank make_rank(TestIo& io, CheckpointIo cio, const ModelSpec& spec, int r, std::shared_ptr<Communicator> world,
               AsyncCheckpointerOptions options) {
  Rank rank;
  Runtime::Strand strand = io.runtime().make_strand();
  auto model = io.runtime().spawn(strand, Model::build(spec, r, std::move(world))).get();
  if (!model) throw std::runtime_error(model.error().to_string());
  rank.model = std::move(*model);
  rank.model->allocate();
  fixtures::fill_known_values(*rank.model);
  fixtures::fill_known_state(*rank.model);
  auto checkpointer = AsyncCheckpointer::create(*rank.model, cio, strand, std::move(options));
  if (!checkpointer) throw std::runtime_error(checkpointer.error().to_string());
  rank.checkpointer = std::move(*checkpointer);
  return rank;
}

// Overwrites every value the rank would checkpoint: what an optimizer step does.
void scribble(Model& model) {
  auto chunks = LocalChunks::of(model);
  for (auto& chunk : chunks->chunks()) {
    if (!chunk.bytes.empty()) std::memset(chunk.bytes.data(), 0x3c, chunk.bytes.size());
  }
  model.set_step(99);
}

// Loads `dir` into a fresh `spec` model on every rank; true if all hold the known values.
bool loads_known_values(TestIo& io, CheckpointIo cio, const ModelSpec& spec, const std::string& dir) {
  auto results = test::run_local_ranks<std::int64_t>(io.runtime(), spec.world_size, [&](int r, std::shared_ptr<Communicator> w) {
    return [](const ModelSpec& s, int rank, std::shared_ptr<Communicator> world, CheckpointIo c, std::string d) -> Task<std::int64_t> {
      auto model = co_await Model::build(s, rank, std::move(world));
      if (!model) co_return fail(model.error());
      (*model)->allocate();
      fixtures::fill_known_values(**model);
      LoadOptions options;  // named: GCC 12 mishandles default-argument temporaries in co_await calls
      auto loaded = co_await load_checkpoint(**model, c, std::move(d), std::move(options));
      if (!loaded) co_return fail(loaded.error());
      auto chunks = LocalChunks::of(**model);
      auto check = fixtures::check_known_values(chunks->chunks());
      if (!check.ok()) co_return fail(Errc::corrupt, *check.first_mismatch);
      co_return check.checked;
    }(spec, r, std::move(w), cio, dir);
  });
  for (auto& r : results) {
    if (!r) {
      UNSCOPED_INFO(r.error().to_string());
      return false;
    }
  }
  return true;
}

}  // namespace

TEST_CASE("AsyncCheckpointer: a save holds the state of the step it was requested at though training changed it before the data was written") {
  TempDir tmp;
  TestIo io;
  GatedStorage gated(io.storage());
  CheckpointIo cio{&io.runtime(), &gated, io.io().staging};
  const ModelSpec spec = seed(4, 2);
  auto world = make_local_world(io.runtime(), 4).value();
  gated.close_gate();  // persist cannot write until every rank has moved on
  std::latch scribbled(4);
  std::vector<Result<SaveReport>> results(4, fail(Errc::internal, "not run"));
  std::vector<Rank> ranks(4);
  ThreadReport report;
  // Threads 0-3 are the ranks; thread 4 opens the gate once every rank has scribbled.
  on_threads(5, report, [&](int r) {
    if (r == 4) {
      scribbled.wait();
      gated.open_gate();
      return;
    }
    test::Arrival arrival(scribbled);
    ranks[r] = make_rank(io, cio, spec, r, world[r], {.root = tmp.file("ckpts")});
    auto handle = ranks[r].checkpointer->async_save(1);
    THREAD_REQUIRE(report, handle.has_value());
    THREAD_REQUIRE(report, handle->wait_snapshot().has_value());  // the fence
    scribble(*ranks[r].model);                                     // the next optimizer step
    arrival.arrive();
    results[r] = handle->wait();
  });
  CHECK(report.failures() == "");
  for (auto& r : results) REQUIRE(r.has_value());
  CHECK(loads_known_values(io, io.io(), spec, tmp.file("ckpts/step-00000001")));
}

TEST_CASE("AsyncCheckpointer: a save that fails on a full disk leaves training running and the previous checkpoint latest") {
  TempDir tmp;
  TestIo io;
  GatedStorage gated(io.storage());
  CheckpointIo cio{&io.runtime(), &gated, io.io().staging};
  const ModelSpec spec = seed(2, 2);
  auto world = make_local_world(io.runtime(), 2).value();
  std::vector<Rank> ranks(2);
  // Threads 0-1 are the ranks; thread 2 fills the disk once both saved step 1 and frees
  // it once both saves of step 2 failed.
  std::latch first_saved(2), disk_full(1), second_failed(2), disk_freed(1);
  ThreadReport report;
  on_threads(3, report, [&](int r) {
    if (r == 2) {
      first_saved.wait();
      gated.fail_writes(Errc::no_space);
      disk_full.count_down();
      second_failed.wait();
      gated.fail_writes(std::nullopt);
      disk_freed.count_down();
      return;
    }
    test::Arrival saved(first_saved), failed(second_failed);
    ranks[r] = make_rank(io, cio, spec, r, world[r], {.root = tmp.file("ckpts")});
    auto first = ranks[r].checkpointer->async_save(1);
    THREAD_REQUIRE(report, first.has_value() && first->wait().has_value());
    saved.arrive();
    disk_full.wait();
    auto second = ranks[r].checkpointer->async_save(2);
    THREAD_REQUIRE(report, second.has_value());  // training is not interrupted
    auto outcome = second->wait();
    THREAD_REQUIRE(report, !outcome.has_value());
    THREAD_CHECK(report, outcome.error().code == Errc::no_space);
    failed.arrive();
    disk_freed.wait();
    auto third = ranks[r].checkpointer->async_save(3);
    THREAD_REQUIRE(report, third.has_value());
    THREAD_REQUIRE(report, third->previous_failure().has_value());  // reported by the next request too
    THREAD_CHECK(report, third->previous_failure()->code == Errc::no_space);
    THREAD_CHECK(report, third->wait().has_value());
    THREAD_CHECK(report, ranks[r].checkpointer->stats().failed == 1);
  });
  CHECK(report.failures() == "");
  CHECK_FALSE(std::filesystem::exists(tmp.file("ckpts/step-00000002")));
  for (const auto& entry : std::filesystem::directory_iterator(tmp.file("ckpts"))) {
    CHECK(entry.path().filename().string().find("step-00000002") == std::string::npos);  // no debris
  }
  auto latest = io.runtime().spawn(latest_checkpoint(io.io(), tmp.file("ckpts"))).get();
  REQUIRE(latest.has_value());
  REQUIRE(latest->has_value());
  CHECK((*latest)->step == 3);
}

TEST_CASE("AsyncCheckpointer: a training loop written as a coroutine awaits the snapshot") {
  TempDir tmp;
  TestIo io;
  const ModelSpec spec = seed(4, 2);
  const std::string root = tmp.file("ckpts");
  auto results = test::run_local_ranks<double>(io.runtime(), 4, [&](int r, std::shared_ptr<Communicator> w) {
    return [](Runtime& runtime, CheckpointIo c, const ModelSpec& s, int rank, std::shared_ptr<Communicator> world,
              std::string dir) -> Task<double> {
      auto model = co_await Model::build(s, rank, std::move(world));
      if (!model) co_return fail(model.error());
      (*model)->allocate();
      fixtures::fill_known_values(**model);
      AsyncCheckpointerOptions options{.root = dir, .keep_last = 2};
      auto checkpointer = AsyncCheckpointer::create(**model, c, runtime.make_strand(), std::move(options));
      if (!checkpointer) co_return fail(checkpointer.error());
      std::optional<SaveHandle> last;
      for (int step = 1; step <= 4; ++step) {
        if (last) {
          if (auto ok = co_await last->snapshot_taken(); !ok) co_return fail(ok.error());  // the fence
        }
        (*model)->set_step(step);  // "the optimizer step"
        auto handle = (*checkpointer)->async_save(step);
        if (!handle) co_return fail(handle.error());
        last = *handle;
      }
      auto done = co_await last->finished();
      if (!done) co_return fail(done.error());
      co_return (*model)->step();
    }(io.runtime(), io.io(), spec, r, std::move(w), root);
  });
  for (auto& r : results) {
    INFO((r ? std::string() : r.error().to_string()));
    REQUIRE(r.has_value());
  }
  auto latest = io.runtime().spawn(latest_checkpoint(io.io(), root)).get();
  REQUIRE(latest.has_value());
  REQUIRE(latest->has_value());
  CHECK((*latest)->step == 4);
  // keep_last 2: steps 3 and 4 remain.
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(root)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"step-00000003", "step-00000004"});
}

TEST_CASE("AsyncCheckpointer: a request while a save runs waits or is skipped as the policy says and both are counted") {
  TempDir tmp;
  TestIo io;
  GatedStorage gated(io.storage());
  CheckpointIo cio{&io.runtime(), &gated, io.io().staging};
  const ModelSpec spec = seed(2, 2);
  for (BusyPolicy policy : {BusyPolicy::skip, BusyPolicy::wait}) {
    const std::string root = tmp.file(policy == BusyPolicy::skip ? "skip" : "wait");
    auto world = make_local_world(io.runtime(), 2).value();
    gated.close_gate();
    std::latch requested(2);
    std::vector<Rank> ranks(2);
    ThreadReport report;
    // Threads 0-1 are the ranks; thread 2 opens the gate once both asked for step 2.
    on_threads(3, report, [&](int r) {
      if (r == 2) {
        requested.wait();
        gated.open_gate();
        return;
      }
      test::Arrival arrival(requested);
      ranks[r] = make_rank(io, cio, spec, r, world[r], {.root = root, .when_busy = policy});
      auto first = ranks[r].checkpointer->async_save(1);
      THREAD_REQUIRE(report, first.has_value());
      THREAD_REQUIRE(report, first->wait_snapshot().has_value());
      auto second = ranks[r].checkpointer->async_save(2);  // the first cannot write yet
      THREAD_REQUIRE(report, second.has_value());
      THREAD_CHECK(report, second->skipped() == (policy == BusyPolicy::skip));
      arrival.arrive();
      auto first_report = first->wait();
      THREAD_REQUIRE(report, first_report.has_value());
      THREAD_CHECK(report, second->wait().has_value() == (policy == BusyPolicy::wait));
      const CheckpointerStats stats = ranks[r].checkpointer->stats();
      THREAD_CHECK(report, stats.skipped == (policy == BusyPolicy::skip ? 1 : 0));
      THREAD_CHECK(report, stats.waited == (policy == BusyPolicy::wait ? 1 : 0));
      THREAD_CHECK(report, stats.committed == (policy == BusyPolicy::wait ? 2 : 1));
      THREAD_CHECK(report, stats.staging_bytes >= stats.state_bytes);
      // One allocation: the images of the rank's data files, each the state's bytes plus a
      // small header and the padding to a page.
      THREAD_CHECK(report, stats.staging_bytes <= stats.state_bytes + first_report->rank_files * 8192);
    });
    CHECK(report.failures() == "");
    CHECK(std::filesystem::exists(root + "/step-00000002") == (policy == BusyPolicy::wait));
  }
}

TEST_CASE("AsyncCheckpointer: a rank that stops answering fails the save within the deadline and later saves say the communicator broke") {
  TempDir tmp;
  TestIo io;
  const ModelSpec spec = seed(2, 2);
  auto world = make_local_world(io.runtime(), 2, {.deadline = 300ms}).value();
  std::vector<Rank> ranks(2);
  ThreadReport report;
  on_threads(2, report, [&](int r) { ranks[r] = make_rank(io, io.io(), spec, r, world[r], {.root = tmp.file("ckpts")}); });
  REQUIRE(report.failures() == "");
  // Rank 1 never saves. The deadline, not a hang, ends the wait: a timeout error (a hang
  // fails by CTest's timeout).
  auto handle = ranks[0].checkpointer->async_save(1);
  REQUIRE(handle.has_value());
  auto outcome = handle->wait();
  REQUIRE_FALSE(outcome.has_value());
  CHECK(outcome.error().code == Errc::timeout);
  auto later = ranks[0].checkpointer->async_save(2);
  REQUIRE_FALSE(later.has_value());
  CHECK_THAT(later.error().message, Catch::Contains("communicator broke"));
  CHECK_FALSE(std::filesystem::exists(tmp.file("ckpts/step-00000001")));
}

TEST_CASE("AsyncCheckpointer: stop abandons a save that cannot finish by its deadline and nothing of it commits") {
  TempDir tmp;
  TestIo io;
  GatedStorage gated(io.storage());
  CheckpointIo cio{&io.runtime(), &gated, io.io().staging};
  const ModelSpec spec = seed(2, 2);
  auto world = make_local_world(io.runtime(), 2).value();
  std::vector<Rank> ranks(2);
  ThreadReport report;
  on_threads(2, report, [&](int r) { ranks[r] = make_rank(io, cio, spec, r, world[r], {.root = tmp.file("ckpts")}); });
  REQUIRE(report.failures() == "");
  on_threads(2, report, [&](int r) {
    auto first = ranks[r].checkpointer->async_save(1);
    THREAD_CHECK(report, first.has_value() && first->wait().has_value());
  });
  REQUIRE(report.failures() == "");
  gated.close_gate();  // the second save never gets to write
  on_threads(2, report, [&](int r) {
    auto handle = ranks[r].checkpointer->async_save(2);
    THREAD_REQUIRE(report, handle.has_value());
    auto stopped = ranks[r].checkpointer->stop(200ms);
    THREAD_REQUIRE(report, !stopped.has_value());
    THREAD_CHECK(report, stopped.error().code == Errc::timeout);
    THREAD_CHECK(report, handle->done());
    THREAD_CHECK(report, !ranks[r].checkpointer->async_save(3).has_value());  // stopped: no more saves
  });
  CHECK(report.failures() == "");
  gated.open_gate();
  auto latest = io.runtime().spawn(latest_checkpoint(io.io(), tmp.file("ckpts"))).get();
  REQUIRE(latest.has_value());
  REQUIRE(latest->has_value());
  CHECK((*latest)->step == 1);
  CHECK(loads_known_values(io, io.io(), spec, tmp.file("ckpts/step-00000001")));
}

TEST_CASE("AsyncCheckpointer: a user blob over its limit is refused at the request, and the next save runs") {
  TempDir tmp;
  TestIo io;
  const ModelSpec spec = seed(2, 2);
  auto world = make_local_world(io.runtime(), 2).value();
  std::vector<Rank> ranks(2);
  const nlohmann::json too_big = {{"s", std::string(max_user_blob_bytes, 'x')}};
  // The rank threads only record; the test thread asserts (Catch2 is not thread-safe).
  std::vector<std::optional<Error>> refused(2);
  std::vector<Result<SaveReport>> next(2, fail(Errc::internal, "not run"));
  ThreadReport report;
  on_threads(2, report, [&](int r) {
    ranks[r] = make_rank(io, io.io(), spec, r, world[r], {.root = tmp.file("ckpts")});
    auto request = ranks[r].checkpointer->async_save(1, too_big);
    if (!request) refused[r] = request.error();
    auto second = ranks[r].checkpointer->async_save(2, {{"step", 2}});
    if (second) next[r] = second->wait();
  });
  REQUIRE(report.failures() == "");
  for (int r = 0; r < 2; ++r) {
    REQUIRE(refused[r].has_value());
    CHECK(refused[r]->code == Errc::invalid_argument);
    CHECK_THAT(refused[r]->message, Catch::Contains("user blob is " + std::to_string(max_user_blob_bytes + 8)));
    INFO((next[r] ? std::string() : next[r].error().to_string()));
    CHECK(next[r].has_value());
  }
  CHECK_FALSE(std::filesystem::exists(tmp.file("ckpts/step-00000001")));
  CHECK(loads_known_values(io, io.io(), spec, tmp.file("ckpts/step-00000002")));
}
