// `corockpt clean ROOT [--dry-run]`: removes the temporary directories (`*.tmp-<id>`)
// directly under ROOT that no live process owns — what killed saves and consolidates
// left, with the space they reserved — and says what each held and the total freed.
// A live save's directory is never removed: its process holds the directory's lock
// (src/corockpt/ckpt/temporary_directory.hpp says where that knowledge ends: one host).
#include <cinttypes>
#include <cstdio>

#include "corockpt/ckpt/temporary_directory.hpp"
#include "tools/corockpt/cli_support.hpp"
#include "tools/corockpt/commands.hpp"

namespace corockpt::cli {

namespace {

struct CleanArgs {
  std::string root;
  bool dry_run = false;
};

int run(const CleanArgs& args) {
  auto engines = Engines::make(StorageKind::automatic);
  if (!engines) return report_error("clean", engines.error());
  LeftoverOptions options;
  options.dry_run = args.dry_run;
  auto report = (*engines)->runtime().spawn(remove_leftovers((*engines)->io(), args.root, options)).get();
  if (!report) return report_error("clean", report.error());
  const char* verb = args.dry_run ? "would remove" : "removed";
  for (const auto& removed : report->removed) {
    std::printf("%s %s: %" PRIu64 " bytes (%s)\n", verb, removed.path.c_str(), removed.bytes,
                human_bytes(static_cast<double>(removed.bytes)).c_str());
  }
  int failed = 0;
  for (const auto& kept : report->kept) {
    std::printf("kept %s: %s\n", kept.path.c_str(), kept.reason.c_str());
    if (kept.why == KeptLeftover::Why::removal_failed) ++failed;
  }
  std::printf("%s %" PRIu64 " bytes (%s) in %zu directories under %s; %zu kept\n",
              args.dry_run ? "would free" : "freed", report->freed_bytes(),
              human_bytes(static_cast<double>(report->freed_bytes())).c_str(), report->removed.size(),
              args.root.c_str(), report->kept.size());
  return failed == 0 ? 0 : 1;
}

}  // namespace

void add_clean_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<CleanArgs>();
  CLI::App* cmd = app.add_subcommand(
      "clean", "remove the temporary directories (*.tmp-*) of killed saves under a root, and say what they held");
  cmd->add_option("root", args->root, "the directory holding checkpoints (not searched below its entries)")->required();
  cmd->add_flag("--dry-run", args->dry_run, "list what would be removed, remove nothing");
  cmd->callback([args, &exit_code] { exit_code = run(*args); });
}

}  // namespace corockpt::cli
