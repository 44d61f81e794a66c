// get_state_dict on a model in device memory issues its collectives in one order on every
// rank (registration order), whatever order the copies into the gather buffers complete
// in, as NCCL requires; a unit with nothing to copy on a rank does not overtake there.
// The device holds every copy until the test releases it: oldest first on even ranks,
// newest first on odd ones. A communicator double records each rank's issues.
#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "corockpt/ckpt/collector.hpp"
#include "corockpt/plugins/comm/local/local_communicator.hpp"
#include "fixtures/known_model.hpp"
#include "fixtures/known_values.hpp"
#include "tests/support/device_aware_communicator.hpp"
#include "tests/support/holding_device.hpp"
#include "tests/support/recording_communicator.hpp"

using namespace corockpt;
using corockpt::test::DeviceAwareCommunicator;
using corockpt::test::HoldingDevice;
using corockpt::test::IssueLog;
using corockpt::test::RecordingCommunicator;
using corockpt::test::ScramblingDevice;

namespace {

// Registration order a, b, c. a and c gather over all 4 ranks; b is HSDP with shard
// groups {0, 1} and {2, 3}, and its one row lies on ranks 0 and 2: ranks 1 and 3 have
// nothing of b to copy.
constexpr const char* spec_json = R"({
  "world_size": 4,
  "meshes": {"all": {"shape": [4], "dim_names": ["fsdp"]},
             "grid": {"shape": [2, 2], "dim_names": ["rep", "shard"]}},
  "units": [
    {"name": "a", "prefix": "a.", "mesh": "all", "layout": "per_param"},
    {"name": "b", "prefix": "b.", "mesh": "grid", "shard_dim": "shard", "replicate_dim": "rep",
     "layout": "per_param"},
    {"name": "c", "prefix": "c.", "mesh": "all", "layout": "flat"}],
  "params": [
    {"unit": "a", "name": "w", "shape": [8, 4]},
    {"unit": "b", "name": "tiny", "shape": [1, 4]},
    {"unit": "c", "name": "z", "shape": [5, 3]}],
  "optimizer": {"type": "adam"}})";

Task<void> collect(Model& model, StateDictOptions options) {
  auto state = co_await get_state_dict(model, options);
  if (!state) co_return fail(state.error());
  co_return Result<void>{};
}

// The issues of `log` on the communicators named in `shared`, in order.
std::vector<std::string> on_shared(const std::vector<std::string>& log, const std::vector<std::string>& other) {
  std::vector<std::string> out;
  for (const auto& name : log) {
    if (std::find(other.begin(), other.end(), name) != other.end()) out.push_back(name);
  }
  return out;
}

}  // namespace

TEST_CASE("collector - issue order: every rank issues its units' collectives in registration order, "
          "whatever order device copies complete in",
          "[collector][device]") {
  const bool full = GENERATE(true, false);
  CAPTURE(full);
  auto spec = parse_model_spec(spec_json).value();
  constexpr int ranks = 4;
  Runtime runtime;
  auto memory = std::make_shared<ScramblingDevice>();
  auto local = make_local_world(runtime, ranks).value();
  std::vector<std::shared_ptr<IssueLog>> logs;
  std::vector<std::shared_ptr<HoldingDevice>> devices;
  std::vector<std::unique_ptr<Model>> models;
  for (int r = 0; r < ranks; ++r) {
    logs.push_back(std::make_shared<IssueLog>());
    devices.push_back(std::make_shared<HoldingDevice>(memory));
  }
  {
    std::vector<TaskHandle<std::unique_ptr<Model>>> built;
    for (int r = 0; r < ranks; ++r) {
      auto world = std::make_shared<RecordingCommunicator>(std::make_shared<DeviceAwareCommunicator>(local[r], memory),
                                                           logs[r]);
      built.push_back(runtime.spawn(runtime.make_strand(), fixtures::known_model(spec, r, world, devices[r], true)));
    }
    for (auto& b : built) models.push_back(b.get().value());
  }
  for (int r = 0; r < ranks; ++r) {
    logs[r]->take();  // the splits of Model::build
    devices[r]->hold(true);
  }

  StateDictOptions options;
  options.full_state_dict = full;
  std::vector<TaskHandle<void>> collected;
  for (int r = 0; r < ranks; ++r) {
    collected.push_back(runtime.spawn(runtime.make_strand(), collect(*models[r], options)));
  }
  auto all_done = [&] {
    for (auto& c : collected) {
      if (!c.ready()) return false;
    }
    return true;
  };
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!all_done() && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    for (int r = 0; r < ranks; ++r) {
      devices[r]->release_when_quiet(r % 2 == 0 ? HoldingDevice::Release::oldest_first
                                                : HoldingDevice::Release::newest_first);
    }
  }
  REQUIRE(all_done());
  for (int r = 0; r < ranks; ++r) {
    auto result = collected[r].get();
    INFO("rank " << r << ": " << (result ? std::string("ok") : result.error().to_string()));
    CHECK(result);
  }

  std::vector<std::vector<std::string>> issued;
  for (int r = 0; r < ranks; ++r) issued.push_back(logs[r]->take());
  for (int p = 0; p < ranks; ++p) {
    for (int q = p + 1; q < ranks; ++q) {
      CAPTURE(p, q, issued[p], issued[q]);
      CHECK(on_shared(issued[p], issued[q]) == on_shared(issued[q], issued[p]));
    }
  }
}
