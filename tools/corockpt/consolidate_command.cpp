// `corockpt consolidate D OUT [--optimizer-states] [--strip-prefix P] [--max-file-size BYTES]`: the full
// tensors in standard safetensors files with model.safetensors.index.json.
#include <cstdio>

#include "corockpt/ckpt/consolidate.hpp"
#include "tools/corockpt/cli_support.hpp"
#include "tools/corockpt/commands.hpp"

namespace corockpt::cli {

namespace {

struct ConsolidateArgs {
  std::string dir;
  std::string out;
  bool optimizer_states = false;
  std::string strip_prefix;
  std::uint64_t max_file_bytes = 5'000'000'000;
};

int run(const ConsolidateArgs& args) {
  auto engines = Engines::make(StorageKind::automatic);
  if (!engines) return report_error("consolidate", engines.error());
  ProgressLine progress("consolidating");
  auto report = (*engines)
                    ->runtime()
                    .spawn(consolidate_checkpoint((*engines)->io(), args.dir, args.out,
                                                  {.optimizer_states = args.optimizer_states,
                                                   .strip_prefix = args.strip_prefix,
                                                   .max_file_bytes = args.max_file_bytes,
                                                   .progress = progress.rank_callback()}))
                    .get();
  progress.finish();
  if (!report) return report_error("consolidate", report.error());
  std::printf("consolidated %s into %s: %zu tensors, %s in %zu files\n", args.dir.c_str(), args.out.c_str(),
              report->tensors, human_bytes(static_cast<double>(report->bytes)).c_str(), report->files);
  return 0;
}

}  // namespace

void add_consolidate_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<ConsolidateArgs>();
  CLI::App* cmd = app.add_subcommand("consolidate", "write a checkpoint's full tensors as standard safetensors files");
  cmd->add_option("dir", args->dir, "the checkpoint directory")->required();
  cmd->add_option("out", args->out, "the directory to create (must not exist)")->required();
  cmd->add_flag("--optimizer-states", args->optimizer_states, "include the optimizer's state.* tensors");
  cmd->add_option("--strip-prefix", args->strip_prefix,
                  "only the tensors named PREFIX..., without it (model. for a checkpoint of DCP's {\"model\": ...})");
  cmd->add_option("--max-file-size", args->max_file_bytes, "bytes per file at most (a bigger tensor gets its own)")
      ->check(CLI::PositiveNumber);
  cmd->callback([args, &exit_code] { exit_code = run(*args); });
}

}  // namespace corockpt::cli
