#pragma once
/// @file
/// `corockpt statedict`: builds the model of a spec on N ranks, runs get_state_dict and
/// writes one JSON description of every rank's state dict.

#include <CLI/CLI.hpp>

namespace corockpt::cli {

/// Adds the subcommand to `app`; its callback runs it and sets the exit code.
void add_statedict_command(CLI::App& app, int& exit_code);

}  // namespace corockpt::cli
