// corockpt: the command-line tool. One program, one subcommand per job.
#include <CLI/CLI.hpp>

#include "tools/corockpt/commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"corockpt: state dicts and checkpoints of FSDP / expert-parallel models"};
  app.require_subcommand(1);
  int exit_code = 0;
  corockpt::cli::add_statedict_command(app, exit_code);
  corockpt::cli::add_save_command(app, exit_code);
  corockpt::cli::add_load_command(app, exit_code);
  corockpt::cli::add_inspect_command(app, exit_code);
  corockpt::cli::add_verify_command(app, exit_code);
  corockpt::cli::add_consolidate_command(app, exit_code);
  corockpt::cli::add_clean_command(app, exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
