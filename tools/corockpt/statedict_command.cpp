#include "tools/corockpt/commands.hpp"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "corockpt/ckpt/collector.hpp"
#include "corockpt/ckpt/format/crc32c.hpp"
#include "corockpt/ckpt/model_spec.hpp"
#include "corockpt/ckpt/resource_bounds.hpp"
#include "corockpt/ckpt/state_dict_json.hpp"
#include "corockpt/plugins/comm/local/local_communicator.hpp"
#include "corockpt/plugins/comm/mpi/mpi_communicator.hpp"
#include "corockpt/plugins/comm/nccl/nccl_communicator.hpp"
#include "corockpt/plugins/device/cuda/cuda_device.hpp"
#include "corockpt/runtime/runtime.hpp"
#include "fixtures/known_values.hpp"
#include "tools/corockpt/cli_support.hpp"

namespace corockpt::cli {

namespace {

struct StatedictArgs {
  std::string spec_path;
  std::string backend = "local";
  double deadline_s = 60;  // bounds every wait on the other ranks, MPI's start included
  std::string out_path;
  StateDictOptions options;
  std::string device = "host";  // or "cuda": the model in GPU memory (GPU rank % count)
  bool nccl = false;            // with cuda: gather over an NCCL world (one GPU per rank)
};

// Where a rank's model lies and what its collectives run on.
struct RankPlacement {
  std::string device = "host";
  bool nccl = false;
};

// The CRC-32C of one tensor's values as 8 hex digits; device memory is copied to the host first.
Task<std::string> value_digest(const TensorView& view, Device* device) {
  std::vector<std::byte> host;
  std::span<const std::byte> bytes = view.bytes();
  if (view.space != MemorySpace::host) {
    if (device == nullptr) co_return fail(Errc::invalid_argument, "statedict: device memory without a device");
    host.resize(view.nbytes());
    std::span<std::byte> to(host);
    if (auto copied = co_await device->copy_to_host(to, bytes); !copied) co_return fail(copied.error());
    bytes = host;
  }
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", static_cast<unsigned>(crc32c(bytes)));
  co_return std::string(hex);
}

// Adds "crc32c" (of the values this rank holds) beside the layout of every entry, so two
// descriptions agree only when their values do.
Task<void> add_value_digests(nlohmann::json& described, const StateDict& state, Device* device) {
  for (const auto& [fqn, value] : state.model) {
    const TensorView& view = local_view(value);
    auto digest = co_await value_digest(view, device);
    if (!digest) co_return fail(digest.error().with_fqn(fqn));
    described["model"][fqn]["crc32c"] = *digest;
  }
  for (const auto& [fqn, states] : state.optim.state) {
    for (const auto& [name, value] : states) {
      const TensorView& view = local_view(value);
      auto digest = co_await value_digest(view, device);
      if (!digest) co_return fail(digest.error().with_fqn(fqn));
      described["optim"]["state"][fqn][name]["crc32c"] = *digest;
    }
  }
  co_return Result<void>{};
}

// One rank's whole job: build, collect, describe.
Task<nlohmann::json> describe_rank(Runtime& runtime, const ModelSpec& spec, int rank,
                                   std::shared_ptr<Communicator> world, StateDictOptions options,
                                   RankPlacement placement) {
  std::shared_ptr<Device> device;
  if (placement.device == "cuda") {
    auto count = cuda_device_count();
    if (!count) co_return fail(count.error().with_rank(rank));
    const int ordinal = rank % *count;
    auto made = make_cuda_device(runtime, {.device = ordinal});
    if (!made) co_return fail(made.error().with_rank(rank));
    device = std::move(*made);
    if (placement.nccl) {
      NcclOptions nccl_options{.device = ordinal};
      auto nccl = co_await make_nccl_world(runtime, world, nccl_options);
      if (!nccl) co_return fail(nccl.error().with_rank(rank));
      world = std::move(*nccl);
    }
  }
  auto model = co_await Model::build(spec, rank, std::move(world));
  if (!model) co_return fail(model.error().with_rank(rank));
  if (auto fits = co_await check_memory_before_allocating(**model); !fits) co_return fail(fits.error());
  (*model)->allocate();
  // Known values in params and optimizer state alike, so every digest is of values that
  // depend on their name and index (a shard gathered into the wrong place changes it).
  fixtures::fill_known_values(**model);
  fixtures::fill_known_state(**model);
  if (device) {
    if (auto moved = co_await (*model)->move_to(device); !moved) co_return fail(moved.error().with_rank(rank));
  }
  auto state = co_await get_state_dict(**model, options);
  if (!state) co_return fail(state.error().with_rank(rank));
  nlohmann::json described = describe_state_dict(*state, rank);
  if (auto digested = co_await add_value_digests(described, *state, device.get()); !digested) {
    co_return fail(digested.error().with_rank(rank));
  }
  co_return described;
}

Result<void> write_json(const std::string& path, const nlohmann::json& doc) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) return fail(system_error(errno, "write", path));
  out << doc.dump(1) << '\n';
  out.close();
  if (!out) return fail(system_error(errno ? errno : EIO, "write", path));
  return {};
}

Result<void> run_local(const ModelSpec& spec, const StatedictArgs& args) {
  if (auto fits = check_ranks_in_process(spec.world_size); !fits) return fits;
  Runtime runtime;
  auto world = make_local_world(runtime, spec.world_size, comm_options(args.deadline_s));
  if (!world) return fail(world.error());
  std::vector<TaskHandle<nlohmann::json>> ranks;
  const RankPlacement placement{args.device, args.nccl};
  for (int r = 0; r < spec.world_size; ++r) {
    ranks.push_back(runtime.spawn(runtime.make_strand(),
                                  describe_rank(runtime, spec, r, (*world)[r], args.options, placement)));
  }
  nlohmann::json doc = {{"world_size", spec.world_size}, {"ranks", nlohmann::json::array()}};
  for (auto& handle : ranks) {
    auto described = handle.get();
    if (!described) return fail(described.error());
    doc["ranks"].push_back(std::move(*described));
  }
  return write_json(args.out_path, doc);
}

// Under mpirun: every process describes its rank; rank 0 gathers and writes.
Result<void> run_mpi(const ModelSpec& spec, const StatedictArgs& args) {
  Runtime runtime;
  auto world = make_mpi_world(runtime, comm_options(args.deadline_s));
  if (!world) return fail(world.error());
  const int rank = (*world)->rank();
  const RankPlacement placement{args.device, args.nccl};
  auto result = runtime.spawn([](Runtime& rt, const ModelSpec& s, std::shared_ptr<Communicator> w, StateDictOptions o,
                                 RankPlacement placement, std::string out) -> Task<void> {
    const int me = w->rank();
    auto described = co_await describe_rank(rt, s, me, w, o, placement);
    if (!described) co_return fail(described.error());
    std::string text = described->dump();
    std::vector<std::size_t> counts(w->size());
    std::size_t mine = text.size();
    std::vector<std::byte> sizes(sizeof(std::size_t) * w->size());
    if (auto ok = co_await w->all_gather(std::as_bytes(std::span(&mine, 1)), sizes); !ok) co_return ok;
    std::memcpy(counts.data(), sizes.data(), sizes.size());
    std::size_t total = 0;
    for (auto c : counts) total += c;
    std::vector<std::byte> all(total);
    if (auto ok = co_await w->gather_v(std::as_bytes(std::span(text)), all, counts, 0); !ok) co_return ok;
    if (me != 0) co_return Result<void>{};
    nlohmann::json doc = {{"world_size", w->size()}, {"ranks", nlohmann::json::array()}};
    std::size_t at = 0;
    for (auto c : counts) {
      doc["ranks"].push_back(nlohmann::json::parse(std::string_view(reinterpret_cast<const char*>(all.data()) + at, c)));
      at += c;
    }
    co_return write_json(out, doc);
  }(runtime, spec, *world, args.options, placement, args.out_path)).get();
  (void)rank;
  world->reset();
  // After a failure a peer may be dead and MPI_Finalize may wait for it for ever: exit
  // without it (non-zero), which makes mpirun end the job.
  if (!result) return result;
  return finalize_mpi(comm_options(args.deadline_s).deadline);
}

int run(const StatedictArgs& args) {
  if (args.nccl && args.device != "cuda") {
    std::fprintf(stderr, "corockpt statedict: --nccl gathers GPU memory: give --device cuda too\n");
    return 2;
  }
  auto spec = load_model_spec(args.spec_path);
  Result<void> done = spec ? (args.backend == "mpi" ? run_mpi(*spec, args) : run_local(*spec, args))
                           : Result<void>(fail(spec.error()));
  if (!done) {
    std::fprintf(stderr, "corockpt statedict: %s\n", done.error().to_string().c_str());
    return 1;
  }
  return 0;
}

}  // namespace

void add_statedict_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<StatedictArgs>();
  CLI::App* cmd = app.add_subcommand("statedict", "build a spec's model on N ranks and describe get_state_dict");
  cmd->add_option("--spec", args->spec_path, "model spec (JSON)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--backend", args->backend, "local (ranks in this process) or mpi (under mpirun)")
      ->check(CLI::IsMember({"local", "mpi"}));
  add_deadline_option(*cmd, args->deadline_s);
  cmd->add_option("--out", args->out_path, "where to write the JSON description")->required();
  cmd->add_flag("--full", args->options.full_state_dict, "gathered, unsharded values");
  cmd->add_flag("--cpu-offload", args->options.cpu_offload, "with --full: only rank 0 holds values");
  cmd->add_flag("--ignore-frozen", args->options.ignore_frozen_params, "leave frozen params out");
  cmd->add_flag("--experts-to-rank0", args->options.experts_to_rank0, "with --full: rank 0 gets every expert");
  cmd->add_option("--device", args->device, "host, or cuda: the model in GPU memory (GPU rank % count)")
      ->check(CLI::IsMember({"host", "cuda"}));
  cmd->add_flag("--nccl", args->nccl, "with --device cuda: gather over NCCL (one GPU per rank)");
  cmd->callback([args, &exit_code] { exit_code = run(*args); });
}

}  // namespace corockpt::cli
