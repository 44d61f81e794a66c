// `corockpt save --spec F [--backend local|mpi] [--storage ...] D`: the spec's model,
// every element of every param, buffer and optimizer state set to its known value, saved.
#include <chrono>
#include <cstdio>

#include "corockpt/ckpt/save.hpp"
#include "tools/corockpt/cli_support.hpp"
#include "tools/corockpt/commands.hpp"

namespace corockpt::cli {

namespace {

struct SaveArgs {
  std::string spec_path;
  std::string dir;
  RankOptions ranks;
};

Task<std::string> save_rank(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> world, CheckpointIo io,
                            std::string dir, std::function<void(std::uint64_t, std::uint64_t)> progress) {
  auto model = co_await Model::build(spec, rank, std::move(world));
  if (!model) co_return fail(model.error().with_rank(rank));
  (*model)->allocate();
  (*model)->fill_known_state();
  SaveOptions options;  // named: GCC 12 mishandles temporaries with non-trivial members in co_await calls
  options.progress = std::move(progress);
  auto saved = co_await save_checkpoint(**model, io, std::move(dir), std::move(options));
  if (!saved) co_return fail(saved.error());
  std::string total;  // rank 0 reports (no ?: in a coroutine: GCC 12 miscompiles some)
  if (rank == 0) total = std::to_string(saved->total_bytes);
  co_return total;
}

int run(const SaveArgs& args) {
  auto spec = load_model_spec(args.spec_path);
  if (!spec) return report_error("save", spec.error());
  auto kind = parse_storage_kind(args.ranks.storage);
  if (!kind) return report_error("save", kind.error());
  auto engines = Engines::make(*kind);
  if (!engines) return report_error("save", engines.error());
  ProgressLine progress("saving");
  const auto start = std::chrono::steady_clock::now();
  auto results = run_ranks(**engines, args.ranks.backend, spec->world_size, [&](int rank, std::shared_ptr<Communicator> world) {
    return save_rank(*spec, rank, std::move(world), (*engines)->io(), args.dir, progress.rank_callback());
  });
  progress.finish();
  if (!results) return report_error("save", results.error());
  for (auto& r : *results) {
    if (!r) return report_error("save", r.error());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!results->front()->empty()) {
    const double bytes = std::stod(*results->front());
    std::printf("saved %s: %s in %.2f s (%.2f GB/s), %d ranks\n", args.dir.c_str(), human_bytes(bytes).c_str(), seconds,
                bytes / seconds / 1e9, spec->world_size);
  }
  return 0;
}

}  // namespace

void add_save_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<SaveArgs>();
  CLI::App* cmd = app.add_subcommand("save", "save a spec's model, filled with known values, as a checkpoint");
  cmd->add_option("--spec", args->spec_path, "model spec (JSON)")->required()->check(CLI::ExistingFile);
  cmd->add_option("dir", args->dir, "the checkpoint directory to create (must not exist)")->required();
  add_rank_options(*cmd, args->ranks);
  cmd->callback([args, &exit_code] { exit_code = run(*args); });
}

}  // namespace corockpt::cli
