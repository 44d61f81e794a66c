// `corockpt save --spec F [--backend local|mpi] [--storage ...] D`: the spec's model,
// every element of every param, buffer and optimizer state set to its known value, saved;
// it prints the fill's time and the save's apart, and the leftovers of killed saves of D
// (D.tmp-* nobody owned) it removed first, with the space each held.
//
// Test hook: with COROCKPT_TEST_STOP_BEFORE_PLAN=R in the environment, rank R stops its
// own process (SIGSTOP) once its data files are written, before it sends its plan to
// rank 0: a rank that never sends its plan (tests/tools/mpi64_save_test.sh).
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "corockpt/ckpt/resource_bounds.hpp"
#include "corockpt/ckpt/save.hpp"
#include "fixtures/known_values.hpp"
#include "tools/corockpt/cli_support.hpp"
#include "tools/corockpt/commands.hpp"

namespace corockpt::cli {

namespace {

struct SaveArgs {
  std::string spec_path;
  std::string dir;
  RankOptions ranks;
};

// The rank COROCKPT_TEST_STOP_BEFORE_PLAN names, or -1.
int rank_to_stop_before_plan() {
  const char* value = std::getenv("COROCKPT_TEST_STOP_BEFORE_PLAN");
  if (value == nullptr || *value == '\0') return -1;
  char* end = nullptr;
  const long rank = std::strtol(value, &end, 10);
  return *end == '\0' && rank >= 0 ? static_cast<int>(rank) : -1;
}

// Rank 0's timings (fill: building and filling the model, every rank's done; save: the
// collective save alone) and the bytes every rank wrote, as "fill save bytes".
Task<std::string> save_rank(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> world, CheckpointIo io,
                            std::string dir, std::function<void(std::uint64_t, std::uint64_t)> progress,
                            int stop_before_plan) {
  const auto start = std::chrono::steady_clock::now();
  auto model = co_await Model::build(spec, rank, world);
  if (!model) co_return fail(model.error().with_rank(rank));
  if (auto fits = co_await check_memory_before_allocating(**model); !fits) co_return fail(fits.error());
  (*model)->allocate();
  fixtures::fill_known_values(**model);
  fixtures::fill_known_state(**model);
  // Every rank filled: what follows is the save alone.
  if (auto ok = co_await world->barrier(); !ok) co_return fail(ok.error().with_rank(rank));
  const auto filled = std::chrono::steady_clock::now();
  SaveOptions options;  // named: GCC 12 mishandles temporaries with non-trivial members in co_await calls
  options.progress = std::move(progress);
  if (rank == stop_before_plan) options.on_data_written = [] { ::raise(SIGSTOP); };  // the test hook above
  auto saved = co_await save_checkpoint(**model, io, std::move(dir), std::move(options));
  if (!saved) co_return fail(saved.error());
  const auto end = std::chrono::steady_clock::now();
  std::string times;  // rank 0 reports (no ?: in a coroutine: GCC 12 miscompiles some)
  if (rank == 0) {
    times = std::to_string(std::chrono::duration<double>(filled - start).count()) + " " +
            std::to_string(std::chrono::duration<double>(end - filled).count()) + " " +
            std::to_string(saved->total_bytes);
    // Then a line per leftover of a killed save the save removed first: "bytes path".
    for (const auto& removed : saved->leftovers.removed) {
      times += "\n" + std::to_string(removed.bytes) + " " + removed.path;
    }
  }
  co_return times;
}

int run(const SaveArgs& args) {
  auto spec = load_model_spec(args.spec_path);
  if (!spec) return report_error("save", spec.error());
  auto kind = parse_storage_kind(args.ranks.storage);
  if (!kind) return report_error("save", kind.error());
  auto engines = Engines::make(*kind, args.ranks.staging_mib);
  if (!engines) return report_error("save", engines.error());
  ProgressLine progress("saving");
  const int stop_before_plan = rank_to_stop_before_plan();
  auto results = run_ranks(**engines, args.ranks, spec->world_size, [&](int rank, std::shared_ptr<Communicator> world) {
    return save_rank(*spec, rank, std::move(world), (*engines)->io(), args.dir, progress.rank_callback(),
                     stop_before_plan);
  });
  progress.finish();
  if (!results) return report_error("save", results.error());
  for (auto& r : *results) {
    if (!r) return report_error("save", r.error());
  }
  if (!results->front()->empty()) {
    std::istringstream lines(*results->front());
    std::string line;
    std::getline(lines, line);
    double fill_s = 0, save_s = 0, bytes = 0;
    std::istringstream(line) >> fill_s >> save_s >> bytes;
    while (std::getline(lines, line)) {
      const auto space = line.find(' ');
      const double freed = std::stod(line.substr(0, space));
      std::printf("removed %s, left by a killed save: %s bytes (%s)\n", line.substr(space + 1).c_str(),
                  line.substr(0, space).c_str(), human_bytes(freed).c_str());
    }
    // The fill (known values, a test fixture) is not the save's: report them apart.
    std::printf("filled the model with known values in %.2f s\n", fill_s);
    std::printf("saved %s: %s in %.2f s (%.2f GB/s), %d ranks\n", args.dir.c_str(), human_bytes(bytes).c_str(), save_s,
                bytes / save_s / 1e9, spec->world_size);
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
