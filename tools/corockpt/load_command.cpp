// `corockpt load --spec F2 [--backend local|mpi] [--storage ...] D [--check] [--no-strict]
// [--replicas-once]`: loads D into the model of spec F2 — any world size, mesh, layout or
// dtype — and with --check compares every element of every local shard with its known
// value. --replicas-once reads each replicated chunk on one rank of its replicas and
// passes it to the others over the world communicator (LoadOptions::replicas).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "corockpt/ckpt/load.hpp"
#include "corockpt/ckpt/resource_bounds.hpp"
#include "fixtures/known_values.hpp"
#include "tools/corockpt/cli_support.hpp"
#include "tools/corockpt/commands.hpp"

namespace corockpt::cli {

namespace {

struct LoadArgs {
  std::string spec_path;
  std::string dir;
  bool check = false;
  bool no_strict = false;
  bool replicas_once = false;
  RankOptions ranks;
};

// One rank's outcome as "bytes elements seconds" (the numbers the summary adds up; the
// seconds are load_checkpoint's alone).
Task<std::string> load_rank(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> world, CheckpointIo io,
                            std::string dir, bool check, bool strict, bool replicas_once,
                            std::function<void(std::uint64_t, std::uint64_t)> progress) {
  auto model = co_await Model::build(spec, rank, std::move(world));
  if (!model) co_return fail(model.error().with_rank(rank));
  if (auto fits = co_await check_memory_before_allocating(**model); !fits) co_return fail(fits.error());
  (*model)->allocate();
  fixtures::fill_known_values(**model);
  {
    // Poison everything first (NaN bytes, step -1): what the check sees came from disk.
    auto chunks = LocalChunks::of(**model);
    if (!chunks) co_return fail(chunks.error().with_rank(rank));
    for (auto& chunk : chunks->chunks()) {
      if (!chunk.bytes.empty()) std::memset(chunk.bytes.data(), 0xff, chunk.bytes.size());  // empty: no memory
    }
    (*model)->set_step(-1);
  }
  LoadOptions options;  // named: GCC 12 mishandles temporaries with non-trivial members in co_await calls
  options.strict = strict;
  options.progress = std::move(progress);
  if (replicas_once) options.replicas = (*model)->world();
  // The clock starts when every rank has built and filled its model (2 cores: the CPU
  // another rank spends building would otherwise count as this rank's load).
  if (auto ready = co_await (*model)->world()->barrier(); !ready) co_return fail(ready.error());
  const auto start = std::chrono::steady_clock::now();
  auto loaded = co_await load_checkpoint(**model, io, std::move(dir), std::move(options));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!loaded) co_return fail(loaded.error());
  for (const auto& name : loaded->missing) std::fprintf(stderr, "rank %d: not in the checkpoint: %s\n", rank, name.c_str());
  for (const auto& name : loaded->mismatched) std::fprintf(stderr, "rank %d: another shape in the checkpoint: %s\n", rank, name.c_str());
  std::int64_t checked = 0;
  if (check) {
    auto chunks = LocalChunks::of(**model);
    if (!chunks) co_return fail(chunks.error().with_rank(rank));
    auto result = fixtures::check_known_values(chunks->chunks());
    if (!result.ok()) {
      co_return fail(Errc::corrupt, "after " + std::to_string(result.checked - 1) + " matching elements: " +
                                        *result.first_mismatch,
                     {.rank = rank, .operation = "check"});
    }
    checked = result.checked;
  }
  co_return std::to_string(loaded->bytes_read) + " " + std::to_string(checked) + " " + std::to_string(seconds);
}

int run(const LoadArgs& args) {
  auto spec = load_model_spec(args.spec_path);
  if (!spec) return report_error("load", spec.error());
  auto kind = parse_storage_kind(args.ranks.storage);
  if (!kind) return report_error("load", kind.error());
  auto engines = Engines::make(*kind, args.ranks.staging_mib);
  if (!engines) return report_error("load", engines.error());
  ProgressLine progress("loading");
  const auto start = std::chrono::steady_clock::now();
  auto results = run_ranks(**engines, args.ranks, spec->world_size, [&](int rank, std::shared_ptr<Communicator> world) {
    return load_rank(*spec, rank, std::move(world), (*engines)->io(), args.dir, args.check, !args.no_strict,
                     args.replicas_once, progress.rank_callback());
  });
  progress.finish();
  if (!results) return report_error("load", results.error());
  std::uint64_t bytes = 0;
  std::int64_t checked = 0;
  double slowest = 0;  // the slowest rank's load_checkpoint
  for (auto& r : *results) {
    if (!r) return report_error("load", r.error());
    unsigned long long b = 0;
    long long c = 0;
    double s = 0;
    std::sscanf(r->c_str(), "%llu %lld %lf", &b, &c, &s);
    bytes += b;
    checked += c;
    slowest = std::max(slowest, s);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string who = args.ranks.backend == "mpi" ? "this rank" : std::to_string(spec->world_size) + " ranks";
  std::printf("loaded %s on %s: %s read in %.2f s (%.2f GB/s); load_checkpoint %.3f s on the slowest rank%s\n",
              args.dir.c_str(), who.c_str(), human_bytes(static_cast<double>(bytes)).c_str(), seconds,
              bytes / seconds / 1e9, slowest, args.replicas_once ? ", replicas read once" : "");
  if (args.check) std::printf("checked %lld elements: all equal their known values\n", static_cast<long long>(checked));
  return 0;
}

}  // namespace

void add_load_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<LoadArgs>();
  CLI::App* cmd = app.add_subcommand("load", "load a checkpoint into a spec's model (any world size or layout)");
  cmd->add_option("--spec", args->spec_path, "model spec (JSON)")->required()->check(CLI::ExistingFile);
  cmd->add_option("dir", args->dir, "the checkpoint directory")->required();
  cmd->add_flag("--check", args->check, "compare every element with its known value (as `corockpt save` wrote it)");
  cmd->add_flag("--no-strict", args->no_strict, "report keys the checkpoint lacks instead of failing");
  cmd->add_flag("--replicas-once", args->replicas_once,
                "read each replicated chunk (HSDP replicas, buffers, Adam's step) on one of the ranks holding it and "
                "pass it to the others over the world communicator (a collective) instead of reading it on each");
  add_rank_options(*cmd, args->ranks);
  cmd->callback([args, &exit_code] { exit_code = run(*args); });
}

}  // namespace corockpt::cli
