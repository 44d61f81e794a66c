// get_state_dict and set_state_dict on a model in device memory. The device is a test
// double whose memory holds bytes scrambled by address (tests/support/scrambling_device.hpp),
// so any direct host read or write of device memory, or a memcpy between two device
// buffers, shows as wrong values. Each case runs over the local backend (host buffers,
// staged through the device) and over a device-aware double of it (device buffers, the
// path nccl takes).
#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "corockpt/ckpt/collector.hpp"
#include "corockpt/ckpt/set_state_dict.hpp"
#include "fixtures/known_model.hpp"
#include "fixtures/known_values.hpp"
#include "tests/ckpt/checkpoint_test_support.hpp"
#include "tests/ckpt/seed_spec.hpp"
#include "tests/ckpt/state_dict_compare.hpp"
#include "tests/support/device_aware_communicator.hpp"
#include "tests/support/local_ranks.hpp"
#include "tests/support/scrambling_device.hpp"

using namespace corockpt;
using corockpt::test::DeviceAwareCommunicator;
using corockpt::test::ScramblingDevice;
using corockpt::test::difference;
using corockpt::test::spaces_of;

namespace {

// The seed (experts on a submesh) or odd shapes, dtypes, a buffer, HSDP; Adam with weight
// decay, so the lazily initialised optimizer state is not zero.
ModelSpec spec_for(const std::string& which, const std::string& layout) {
  auto spec = parse_model_spec(which == "seed" ? test::seed_spec_json(layout, 4, 2)
                                               : test::odd_spec_json(layout, 4, "bfloat16"));
  if (!spec) throw std::runtime_error(spec.error().to_string());
  spec->optimizer->weight_decay = 0.25;
  return *spec;
}

struct Compared {
  std::string difference;  // "" when equal
  std::string spaces;      // of the device model's state dict
};

// This rank's state dict of a host model against that of the same model in device memory.
Task<Compared> compare_collected(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> host_world,
                                 std::shared_ptr<Communicator> device_world, std::shared_ptr<ScramblingDevice> device,
                                 StateDictOptions options) {
  auto host_model = co_await fixtures::known_model(spec, rank, host_world, nullptr, false);
  if (!host_model) co_return fail(host_model.error());
  auto device_model = co_await fixtures::known_model(spec, rank, device_world, device, false);
  if (!device_model) co_return fail(device_model.error());
  auto expected = co_await get_state_dict(**host_model, options);
  if (!expected) co_return fail(expected.error());
  auto got = co_await get_state_dict(**device_model, options);
  if (!got) co_return fail(got.error());
  Compared out{.spaces = spaces_of(*got)};
  auto on_host = co_await state_dict_to_host(*got, device.get());
  if (!on_host) co_return fail(on_host.error());
  out.difference = difference(*expected, *on_host);
  co_return out;
}

// The worlds each case runs over: the local backend as it is, and its device-aware double.
std::vector<std::pair<std::string, bool>> backends() { return {{"local", false}, {"device-aware", true}}; }

}  // namespace

TEST_CASE("Device collector: get_state_dict of a model in device memory equals the host model's for every option") {
  const std::vector<std::pair<std::string, StateDictOptions>> requests = {
      {"sharded", {}},
      {"sharded + cpu_offload", {.cpu_offload = true}},
      {"full", {.full_state_dict = true}},
      {"full + cpu_offload", {.full_state_dict = true, .cpu_offload = true}},
      {"full + experts_to_rank0", {.full_state_dict = true, .experts_to_rank0 = true}},
      {"sharded + ignore_frozen_params", {.ignore_frozen_params = true}},
  };
  for (const std::string which : {"seed", "odd"}) {
    for (const std::string layout : {"flat", "per_param"}) {
      const ModelSpec spec = spec_for(which, layout);
      for (const auto& [backend, device_aware] : backends()) {
        for (const auto& [request, options] : requests) {
          DYNAMIC_SECTION(which << " " << layout << " over " << backend << ": " << request) {
            test::TestIo io;
            auto device = std::make_shared<ScramblingDevice>();
            auto world = make_local_world(io.runtime(), spec.world_size).value();
            auto device_world = device_aware ? DeviceAwareCommunicator::wrap(world, device) : world;
            std::vector<TaskHandle<Compared>> ranks;
            for (int r = 0; r < spec.world_size; ++r) {
              ranks.push_back(io.runtime().spawn(io.runtime().make_strand(),
                                                 compare_collected(spec, r, world[r], device_world[r], device, options)));
            }
            for (int r = 0; r < spec.world_size; ++r) {
              auto compared = ranks[r].get();
              INFO("rank " << r << ": " << (compared ? compared->difference : compared.error().to_string()));
              REQUIRE(compared.has_value());
              CHECK(compared->difference.empty());
              const bool keeps_nothing = options.full_state_dict && options.cpu_offload && r != 0;
              CHECK(compared->spaces == (keeps_nothing ? "empty" : options.cpu_offload ? "host" : "cuda"));
            }
          }
        }
      }
    }
  }
}

namespace {

// Model A (host, known values) gives its state dict with `get` (from a copy of it in
// device memory when `from_device`); model B, in device memory with scrambled values,
// takes it with `set`. Returns how B's sharded state dict differs from A's.
Task<std::string> set_on_device(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> host_world,
                                std::shared_ptr<Communicator> device_world, std::shared_ptr<ScramblingDevice> device,
                                StateDictOptions get, StateDictOptions set, bool from_device) {
  auto a = co_await fixtures::known_model(spec, rank, host_world, nullptr, false);
  if (!a) co_return fail(a.error());
  // Named, not a ?: temporary: GCC 12 destroys a conditional's temporary twice in a coroutine.
  std::shared_ptr<Device> source_device;
  if (from_device) source_device = device;
  auto source = co_await fixtures::known_model(spec, rank, device_world, source_device, false);
  if (!source) co_return fail(source.error());
  auto state = co_await get_state_dict(**source, get);
  if (!state) co_return fail(state.error());

  auto b = co_await Model::build(spec, rank, device_world);
  if (!b) co_return fail(b.error());
  (*b)->allocate();
  fixtures::fill_known_values(**b);
  for (auto& inst : (*b)->instances()) {  // nothing of A's values may survive by accident
    auto scramble = [](TensorView& v) {
      if (v.data) std::memset(v.data, 0x5a, v.nbytes());
    };
    scramble(inst.flat_value);
    for (auto& s : inst.flat_states) scramble(s);
    for (auto& slot : inst.params) {
      scramble(slot.value);
      for (auto& s : slot.states) scramble(s);
    }
  }
  (*b)->set_step(7);
  if (auto moved = co_await (*b)->move_to(device); !moved) co_return fail(moved.error());
  auto report = co_await set_state_dict(**b, *state, set);
  if (!report) co_return fail(report.error());
  if (!report->missing.empty()) co_return std::string("missing " + report->missing.front());

  StateDictOptions sharded;
  auto expected = co_await get_state_dict(**a, sharded);
  if (!expected) co_return fail(expected.error());
  auto got = co_await get_state_dict(**b, sharded);
  if (!got) co_return fail(got.error());
  auto on_host = co_await state_dict_to_host(*got, device.get());
  if (!on_host) co_return fail(on_host.error());
  co_return difference(*expected, *on_host);
}

}  // namespace

TEST_CASE("Device collector: set_state_dict fills a model in device memory from host or device state dicts") {
  struct Request {
    std::string name;
    StateDictOptions get, set;
    bool from_device;
  };
  const std::vector<Request> requests = {
      {"sharded from device", {}, {}, true},
      {"sharded from host", {}, {}, false},
      {"full from device", {.full_state_dict = true}, {.full_state_dict = true}, true},
      {"full from rank 0",
       {.full_state_dict = true, .cpu_offload = true, .experts_to_rank0 = true},
       {.full_state_dict = true, .broadcast_from_rank0 = true},
       true},
  };
  for (const std::string layout : {"flat", "per_param"}) {
    const ModelSpec spec = spec_for("seed", layout);
    for (const auto& [backend, device_aware] : backends()) {
      for (const auto& request : requests) {
        DYNAMIC_SECTION(layout << " over " << backend << ": " << request.name) {
          test::TestIo io;
          auto device = std::make_shared<ScramblingDevice>();
          auto world = make_local_world(io.runtime(), spec.world_size).value();
          auto device_world = device_aware ? DeviceAwareCommunicator::wrap(world, device) : world;
          std::vector<TaskHandle<std::string>> ranks;
          for (int r = 0; r < spec.world_size; ++r) {
            ranks.push_back(io.runtime().spawn(io.runtime().make_strand(),
                                               set_on_device(spec, r, world[r], device_world[r], device, request.get,
                                                             request.set, request.from_device)));
          }
          for (int r = 0; r < spec.world_size; ++r) {
            auto outcome = ranks[r].get();
            INFO("rank " << r << ": " << (outcome ? *outcome : outcome.error().to_string()));
            REQUIRE(outcome.has_value());
            CHECK(outcome->empty());
          }
        }
      }
    }
  }
}

TEST_CASE("Device collector: a model in device memory without a device is an error naming Model::set_device") {
  test::TestIo io;
  const ModelSpec spec = spec_for("seed", "flat");
  auto device = std::make_shared<ScramblingDevice>();
  auto results = test::run_local_ranks<StateDict>(io.runtime(), spec.world_size, [&](int r, std::shared_ptr<Communicator> w) {
    return [](const ModelSpec& s, int rank, std::shared_ptr<Communicator> world, std::shared_ptr<Device> d) -> Task<StateDict> {
      auto model = co_await fixtures::known_model(s, rank, std::move(world), d, false);
      if (!model) co_return fail(model.error());
      (*model)->set_device(nullptr);
      StateDictOptions options;
      co_return co_await get_state_dict(**model, options);
    }(spec, r, std::move(w), device);
  });
  for (auto& r : results) {
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == Errc::invalid_argument);
    CHECK_THAT(r.error().to_string(), Catch::Contains("Model::set_device"));
  }
}
