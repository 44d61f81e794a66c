// A trainer's view of corockpt: two ranks (threads of this process) register a small
// FSDP model over memory they own (Model::bind), save a checkpoint, load it into other
// memory and check every byte. Exits 0 when the bytes match.
#include <corockpt/ckpt/load.hpp>
#include <corockpt/ckpt/model.hpp>
#include <corockpt/ckpt/model_spec.hpp>
#include <corockpt/ckpt/save.hpp>
#include <corockpt/plugins/comm/local/local_communicator.hpp>
#include <corockpt/plugins/storage/make_storage.hpp>
#include <corockpt/runtime/buffer_pool.hpp>
#include <corockpt/runtime/runtime.hpp>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace corockpt;

// One FSDP unit over 2 ranks: w is [5, 4] (rows 3 and 2), b is [4] (rows 2 and 2), Adam.
constexpr const char* spec_json = R"({
  "world_size": 2,
  "meshes": {"fsdp": {"shape": [2], "dim_names": ["dp"]}},
  "units": [{"name": "layer", "prefix": "layer.", "mesh": "fsdp", "layout": "per_param"}],
  "params": [{"unit": "layer", "name": "w", "shape": [5, 4]}, {"unit": "layer", "name": "b", "shape": [4]}],
  "optimizer": {"type": "adam"}})";

// What a trainer owns for one param on one rank: its shard and Adam's two states.
struct OwnedParam {
  std::string fqn;
  std::vector<std::int64_t> shape;
  std::vector<float> value, exp_avg, exp_avg_sq;
};

// This rank's params, shaped as the model says, filled with `seed`-dependent values.
std::vector<OwnedParam> own_memory(const Model& model, float seed) {
  std::vector<OwnedParam> owned;
  for (const auto& instance : model.instances()) {
    for (const auto& slot : instance.params) {
      OwnedParam p{slot.fqn, slot.box.sizes, {}, {}, {}};
      std::size_t n = 1;
      for (auto d : p.shape) n *= static_cast<std::size_t>(d);
      for (std::size_t i = 0; i < n; ++i) {
        p.value.push_back(seed + static_cast<float>(i));
        p.exp_avg.push_back(seed * 2 + static_cast<float>(i));
        p.exp_avg_sq.push_back(seed * 3 + static_cast<float>(i));
      }
      owned.push_back(std::move(p));
    }
  }
  return owned;
}

TensorView view_of(std::vector<float>& values, const std::vector<std::int64_t>& shape) {
  return TensorView{reinterpret_cast<std::byte*>(values.data()), DType::float32, shape, MemorySpace::host};
}

Result<void> bind_all(Model& model, std::vector<OwnedParam>& owned) {
  for (auto& p : owned) {
    auto ok = model.bind(p.fqn, view_of(p.value, p.shape), {view_of(p.exp_avg, p.shape), view_of(p.exp_avg_sq, p.shape)});
    if (!ok) return ok;
  }
  return {};
}

bool same_bytes(const std::vector<OwnedParam>& a, const std::vector<OwnedParam>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].value != b[i].value || a[i].exp_avg != b[i].exp_avg || a[i].exp_avg_sq != b[i].exp_avg_sq) return false;
  }
  return true;
}

// One rank: save from its memory, load into fresh memory, compare.
Task<bool> rank_main(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> world, CheckpointIo io,
                     std::string dir) {
  auto saved_model = co_await Model::build(spec, rank, world);
  if (!saved_model) co_return fail(saved_model.error());
  auto saved = own_memory(**saved_model, 10.0f * static_cast<float>(rank + 1));
  if (auto ok = bind_all(**saved_model, saved); !ok) co_return fail(ok.error());
  (*saved_model)->set_step(3);
  if (auto report = co_await save_checkpoint(**saved_model, io, dir); !report) co_return fail(report.error());

  auto loaded_model = co_await Model::build(spec, rank, world);
  if (!loaded_model) co_return fail(loaded_model.error());
  auto loaded = own_memory(**loaded_model, -1.0f);
  if (auto ok = bind_all(**loaded_model, loaded); !ok) co_return fail(ok.error());
  if (auto report = co_await load_checkpoint(**loaded_model, io, dir); !report) co_return fail(report.error());
  co_return same_bytes(saved, loaded) && (*loaded_model)->step() == 3;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "consumer-checkpoint";
  std::filesystem::remove_all(dir);

  auto spec = parse_model_spec(spec_json);
  if (!spec) return std::fprintf(stderr, "%s\n", spec.error().to_string().c_str()), 1;
  Runtime runtime;
  auto storage = make_storage(runtime, StorageKind::automatic);
  auto staging = BufferPool::create({.buffer_bytes = 1 << 20, .buffer_count = 4}, make_host_allocator());
  auto world = make_local_world(runtime, spec->world_size);
  if (!storage || !staging || !world) return std::fprintf(stderr, "set-up failed\n"), 1;
  CheckpointIo io{&runtime, storage->get(), staging->get()};

  std::vector<TaskHandle<bool>> ranks;
  for (int r = 0; r < spec->world_size; ++r) {
    ranks.push_back(runtime.spawn(runtime.make_strand(), rank_main(*spec, r, (*world)[r], io, dir)));
  }
  int status = 0;
  for (int r = 0; r < spec->world_size; ++r) {
    auto result = ranks[r].get();
    if (!result) {
      std::fprintf(stderr, "rank %d: %s\n", r, result.error().to_string().c_str());
      status = 1;
    } else if (!*result) {
      std::fprintf(stderr, "rank %d: the loaded bytes differ from the saved ones\n", r);
      status = 1;
    }
  }
  if (status == 0) std::printf("consumer: saved and loaded %s on %d ranks, every byte equal\n", dir.c_str(), spec->world_size);
  return status;
}
