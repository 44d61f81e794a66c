// `corockpt verify D`: every check that needs no model (see ckpt/verify.hpp); every
// problem printed with its file and tensor; exit 0 only when there is none.
#include <cstdio>

#include "corockpt/ckpt/verify.hpp"
#include "tools/corockpt/cli_support.hpp"
#include "tools/corockpt/commands.hpp"

namespace corockpt::cli {

namespace {

int run(const std::string& dir) {
  auto engines = Engines::make(StorageKind::automatic);
  if (!engines) return report_error("verify", engines.error());
  ProgressLine progress("verifying");
  auto report = (*engines)->runtime().spawn(verify_checkpoint((*engines)->io(), dir, progress.rank_callback())).get();
  progress.finish();
  if (!report) return report_error("verify", report.error());
  for (const auto& p : report->problems) {
    std::printf("%s: %s%s%s\n", p.file.empty() ? dir.c_str() : p.file.c_str(), p.tensor.c_str(),
                p.tensor.empty() ? "" : ": ", p.message.c_str());
  }
  std::printf("%s: %zu problems; %zu files, %zu tensors, %zu chunks, %s checksummed\n", dir.c_str(),
              report->problems.size(), report->files, report->tensors, report->chunks,
              human_bytes(static_cast<double>(report->bytes_checked)).c_str());
  return report->ok() ? 0 : 1;
}

}  // namespace

void add_verify_command(CLI::App& app, int& exit_code) {
  auto dir = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("verify", "check a checkpoint's checksums, tiling, files, headers and meshes");
  cmd->add_option("dir", *dir, "the checkpoint directory")->required();
  cmd->callback([dir, &exit_code] { exit_code = run(*dir); });
}

}  // namespace corockpt::cli
