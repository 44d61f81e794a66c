// The collector and checkpoints on a real GPU: a one-rank NCCL world (made through the
// local backend, as ncclCommInitAll with one device would) gathers a model in device
// memory, and a checkpoint saved from device memory loads back into it. Without a GPU
// the program says why and exits 77 (skipped; tests/support/cuda_test_main.cpp).
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "corockpt/ckpt/async_checkpointer.hpp"
#include "corockpt/ckpt/collector.hpp"
#include "corockpt/ckpt/load.hpp"
#include "corockpt/ckpt/save.hpp"
#include "corockpt/ckpt/set_state_dict.hpp"
#include "corockpt/plugins/comm/local/local_communicator.hpp"
#include "corockpt/plugins/comm/nccl/nccl_communicator.hpp"
#include "corockpt/plugins/device/cuda/cuda_device.hpp"
#include "fixtures/known_values.hpp"
#include "tests/ckpt/seed_spec.hpp"
#include "tests/ckpt/state_dict_compare.hpp"
#include "tests/support/local_ranks.hpp"
#include "tests/support/temp_dir.hpp"

using namespace corockpt;
using namespace std::chrono_literals;

namespace {

ModelSpec one_rank_seed(const std::string& layout) {
  auto spec = parse_model_spec(test::seed_spec_json(layout, 1, 1));
  if (!spec) throw std::runtime_error(spec.error().to_string());
  spec->optimizer->weight_decay = 0.25;  // non-zero Adam states from the lazy initialisation
  return *spec;
}

// A one-rank NCCL world on GPU 0.
std::shared_ptr<Communicator> nccl_world(Runtime& rt) {
  auto bootstrap = make_local_world(rt, 1, {.deadline = 60s});
  REQUIRE(bootstrap);
  auto world = rt.spawn(make_nccl_world(rt, (*bootstrap)[0], {.device = 0, .comm = {.deadline = 60s}})).get();
  INFO((world ? std::string("ok") : world.error().to_string()));
  REQUIRE(world);
  return *world;
}

// The state dict of a host model of `spec` with known values, for reference.
Task<std::string> compare_with_host(const ModelSpec& spec, std::shared_ptr<Communicator> host_world, Model& on_gpu,
                                    Device& gpu, StateDictOptions options) {
  auto host = co_await Model::build(spec, 0, std::move(host_world));
  if (!host) co_return fail(host.error());
  (*host)->allocate();
  fixtures::fill_known_values(**host);
  auto expected = co_await get_state_dict(**host, options);
  if (!expected) co_return fail(expected.error());
  auto got = co_await get_state_dict(on_gpu, options);
  if (!got) co_return fail(got.error());
  const std::string spaces = test::spaces_of(*got);
  if (spaces != (options.cpu_offload ? "host" : "cuda")) co_return "the values lie in " + spaces + " memory";
  auto on_host = co_await state_dict_to_host(*got, &gpu);
  if (!on_host) co_return fail(on_host.error());
  co_return test::difference(*expected, *on_host);
}

// A model of `spec` on `world` in GPU memory: known values, or zeros (`known` false).
Task<std::unique_ptr<Model>> gpu_model(const ModelSpec& spec, std::shared_ptr<Communicator> world,
                                       std::shared_ptr<Device> gpu, bool known) {
  auto model = co_await Model::build(spec, 0, std::move(world));
  if (!model) co_return fail(model.error());
  (*model)->allocate();
  fixtures::fill_known_values(**model);
  if (!known) {  // (the optimizer states are zeros already)
    for (auto& inst : (*model)->instances()) {
      if (inst.flat_value.data) std::memset(inst.flat_value.data, 0, inst.flat_value.nbytes());
      for (auto& slot : inst.params) {
        if (slot.value.data) std::memset(slot.value.data, 0, slot.value.nbytes());
      }
    }
  }
  if (auto moved = co_await (*model)->move_to(std::move(gpu)); !moved) co_return fail(moved.error());
  co_return std::move(*model);
}

}  // namespace

TEST_CASE("GPU checkpoints: the collector gathers a model in GPU memory over NCCL with every option", "[cuda]") {
  for (const std::string layout : {"flat", "per_param"}) {
    const ModelSpec spec = one_rank_seed(layout);
    for (bool full : {false, true}) {
      for (bool offload : {false, true}) {
        DYNAMIC_SECTION(layout << (full ? " full" : " sharded") << (offload ? " + cpu_offload" : "")) {
          test::TestIo io;
          Runtime& rt = io.runtime();
          auto world = nccl_world(rt);
          auto gpu = make_cuda_device(rt, {.device = 0});
          REQUIRE(gpu);
          auto model = rt.spawn(gpu_model(spec, world, *gpu, true)).get();
          REQUIRE(model);
          auto host_world = make_local_world(rt, 1).value();
          StateDictOptions options{.full_state_dict = full, .cpu_offload = offload};
          auto compared = rt.spawn(compare_with_host(spec, host_world[0], **model, **gpu, options)).get();
          INFO((compared ? *compared : compared.error().to_string()));
          REQUIRE(compared);
          CHECK(compared->empty());
        }
      }
    }
  }
}

TEST_CASE("GPU checkpoints: a save from GPU memory loads back into GPU memory and set_state_dict too", "[cuda]") {
  test::TempDir tmp;
  test::TestIo io;
  Runtime& rt = io.runtime();
  const ModelSpec spec = one_rank_seed("flat");
  auto world = nccl_world(rt);
  auto gpu = make_cuda_device(rt, {.device = 0});
  REQUIRE(gpu);
  auto saved_model = rt.spawn(gpu_model(spec, world, *gpu, true)).get();
  REQUIRE(saved_model);
  // The optimizer's lazily initialised state (made on a host mirror) is saved too.
  StateDictOptions sharded;
  auto state = rt.spawn(get_state_dict(**saved_model, sharded)).get();
  REQUIRE(state);
  auto saved = rt.spawn(save_checkpoint(**saved_model, io.io(), tmp.file("ckpt"))).get();
  INFO((saved ? std::string("ok") : saved.error().to_string()));
  REQUIRE(saved);

  auto loaded_model = rt.spawn(gpu_model(spec, world, *gpu, false)).get();
  REQUIRE(loaded_model);
  auto loaded = rt.spawn(load_checkpoint(**loaded_model, io.io(), tmp.file("ckpt"))).get();
  INFO((loaded ? std::string("ok") : loaded.error().to_string()));
  REQUIRE(loaded);
  auto host_world = make_local_world(rt, 1).value();
  auto compared = rt.spawn(compare_with_host(spec, host_world[0], **loaded_model, **gpu, sharded)).get();
  INFO((compared ? *compared : compared.error().to_string()));
  REQUIRE(compared);
  CHECK(compared->empty());

  // The state dict in GPU memory, set into another model in GPU memory.
  auto set_model = rt.spawn(gpu_model(spec, world, *gpu, false)).get();
  REQUIRE(set_model);
  auto set = rt.spawn(set_state_dict(**set_model, *state, sharded)).get();
  INFO((set ? std::string("ok") : set.error().to_string()));
  REQUIRE(set);
  auto compared_set = rt.spawn(compare_with_host(spec, host_world[0], **set_model, **gpu, sharded)).get();
  INFO((compared_set ? *compared_set : compared_set.error().to_string()));
  REQUIRE(compared_set);
  CHECK(compared_set->empty());
}

TEST_CASE("GPU checkpoints: async saves of GPU memory, each unit stepped right after its fence, with and without a staging budget", "[cuda]") {
  // The seed with 128 x 128 weights: 32 KiB of staging is less than a unit.
  auto parsed = parse_model_spec(test::with_weights(test::seed_spec_json("flat", 1, 1), 128));
  REQUIRE(parsed);
  const ModelSpec spec = *parsed;
  test::TempDir tmp;
  test::TestIo io;
  Runtime& rt = io.runtime();
  auto world = nccl_world(rt);
  auto gpu = make_cuda_device(rt, {.device = 0});
  REQUIRE(gpu);
  auto host_world = make_local_world(rt, 1).value();
  StateDictOptions sharded;
  for (std::uint64_t budget : {std::uint64_t{0}, std::uint64_t{32} << 10}) {
    INFO("budget " << budget);
    auto model = rt.spawn(gpu_model(spec, world, *gpu, true)).get();
    REQUIRE(model);
    REQUIRE(rt.spawn(get_state_dict(**model, sharded)).get());  // Adam's lazily initialised state, saved too
    const std::string root = tmp.file("budget-" + std::to_string(budget));
    auto checkpointer = AsyncCheckpointer::create(**model, io.io(), rt.make_strand(),
                                                  {.root = root, .staging_budget = budget, .device = *gpu});
    INFO((checkpointer ? std::string("ok") : checkpointer.error().to_string()));
    REQUIRE(checkpointer);
    auto handle = (*checkpointer)->async_save(1);
    REQUIRE(handle);
    // The optimizer step: each unit overwritten in GPU memory right after its fence.
    auto chunks = LocalChunks::of(**model);
    REQUIRE(chunks);
    for (std::uint32_t unit : (*checkpointer)->step_order()) {
      REQUIRE(handle->wait_snapshot(unit));
      for (auto& chunk : chunks->chunks()) {
        if (chunk.unit != unit || chunk.bytes.empty() || chunk.space != MemorySpace::cuda) continue;
        std::vector<std::byte> scribble(chunk.bytes.size(), std::byte{0x3c});
        REQUIRE(rt.spawn((*gpu)->copy_to_device(chunk.bytes, scribble)).get());
      }
    }
    auto saved = handle->wait();
    INFO((saved ? std::string("ok") : saved.error().to_string()));
    REQUIRE(saved);
    REQUIRE((*checkpointer)->stop(std::chrono::seconds(60)));

    auto loaded_model = rt.spawn(gpu_model(spec, world, *gpu, false)).get();
    REQUIRE(loaded_model);
    auto loaded = rt.spawn(load_checkpoint(**loaded_model, io.io(), saved->dir)).get();
    INFO((loaded ? std::string("ok") : loaded.error().to_string()));
    REQUIRE(loaded);
    auto compared = rt.spawn(compare_with_host(spec, host_world[0], **loaded_model, **gpu, sharded)).get();
    INFO((compared ? *compared : compared.error().to_string()));
    REQUIRE(compared);
    CHECK(compared->empty());
  }
}
