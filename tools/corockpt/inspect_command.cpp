// `corockpt inspect D`: what a checkpoint holds — a table of tensors (name, dtype,
// global shape, chunks, bytes), then the meshes and world size it was saved with, its
// files and sizes, and the user blob. `--json`: all of its metadata as one JSON document
// (format version 1 or 2: every tensor with every chunk, read from the indexes of a
// version 3 checkpoint), for scripts.
#include <algorithm>
#include <cstdio>

#include "corockpt/ckpt/checkpoint_reader.hpp"
#include "corockpt/ckpt/detail/shard_rows.hpp"
#include "corockpt/ckpt/tensor_view.hpp"
#include "tools/corockpt/cli_support.hpp"
#include "tools/corockpt/commands.hpp"

namespace corockpt::cli {

namespace {

using detail::shape_text;

int run(const std::string& dir, bool json) {
  auto engines = Engines::make(StorageKind::automatic);
  if (!engines) return report_error("inspect", engines.error());
  auto metadata = (*engines)->runtime().spawn(read_checkpoint_metadata((*engines)->io(), dir)).get();
  if (!metadata) return report_error("inspect", metadata.error());
  if (json) {
    std::fputs(to_json_text(*metadata).c_str(), stdout);
    return 0;
  }
  if (is_partial_checkpoint_name(dir)) std::printf("warning: %s is a partial checkpoint (its save did not commit)\n\n", dir.c_str());

  std::size_t width = 4;
  for (const auto& [name, record] : metadata->tensors) width = std::max(width, name.size());
  std::printf("%-*s  %-8s  %-16s  %6s  %12s\n", static_cast<int>(width), "name", "dtype", "shape", "chunks", "bytes");
  std::uint64_t total = 0;
  for (const auto& [name, record] : metadata->tensors) {
    const std::uint64_t bytes = detail::bytes_of(corockpt::numel(record.shape), record.dtype);
    total += bytes;
    std::printf("%-*s  %-8s  %-16s  %6zu  %12llu\n", static_cast<int>(width), name.c_str(),
                std::string(to_string(record.dtype)).c_str(), shape_text(record.shape).c_str(), record.chunks.size(),
                static_cast<unsigned long long>(bytes));
  }
  std::uint64_t file_bytes = 0;
  for (const auto& [file, size] : metadata->files) file_bytes += size;
  std::printf("\nformat version %d, saved on %d ranks\n", metadata->version, metadata->world_size);
  for (const auto& mesh : metadata->meshes) {
    std::string dims;
    for (std::size_t i = 0; i < mesh.shape.size(); ++i) {
      dims += (i ? " x " : "") + mesh.dim_names[i] + "=" + std::to_string(mesh.shape[i]);
    }
    std::printf("mesh %s: %s\n", mesh.name.c_str(), dims.c_str());
  }
  std::printf("%zu tensors, %s of tensor data; %zu data files, %s; checksum block %s\n", metadata->tensors.size(),
              human_bytes(static_cast<double>(total)).c_str(), metadata->files.size(),
              human_bytes(static_cast<double>(file_bytes)).c_str(),
              human_bytes(static_cast<double>(metadata->block_size)).c_str());
  std::printf("param groups: %s\n", metadata->param_groups.dump().c_str());
  std::printf("user: %s\n", metadata->user.dump().c_str());
  return 0;
}

}  // namespace

void add_inspect_command(CLI::App& app, int& exit_code) {
  auto dir = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("inspect", "show a checkpoint's tensors, meshes, sizes and user data");
  cmd->add_option("dir", *dir, "the checkpoint directory")->required();
  cmd->add_flag("--json", *json,
                "print all of its metadata as one JSON document: every tensor with every chunk (format version 1 or 2)");
  cmd->callback([dir, json, &exit_code] { exit_code = run(*dir, *json); });
}

}  // namespace corockpt::cli
