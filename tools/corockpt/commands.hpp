#pragma once
/// @file
/// The subcommands of `corockpt`. Each adds itself to the app; its callback runs it and
/// sets the exit code. A checkpoint directory is always the positional argument.
///
/// - statedict: build a spec's model on N ranks, describe get_state_dict as JSON
/// - save: build a spec's model filled with known values, save it
/// - load: load a checkpoint into a spec's model (any world size, mesh, layout, dtype),
///   optionally check every element against the known values
/// - inspect: the tensors, meshes, sizes and user blob of a checkpoint
/// - verify: every check that needs no model; exit 0 only when all pass
/// - consolidate: full tensors as standard safetensors files with a Hugging Face index
/// - clean: remove the temporary directories of killed saves (nobody holds their lock)

#include <CLI/CLI.hpp>

namespace corockpt::cli {

void add_statedict_command(CLI::App& app, int& exit_code);
void add_save_command(CLI::App& app, int& exit_code);
void add_load_command(CLI::App& app, int& exit_code);
void add_inspect_command(CLI::App& app, int& exit_code);
void add_verify_command(CLI::App& app, int& exit_code);
void add_consolidate_command(CLI::App& app, int& exit_code);
void add_clean_command(CLI::App& app, int& exit_code);

}  // namespace corockpt::cli
