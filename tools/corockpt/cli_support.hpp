#pragma once
/// @file
/// What the checkpoint subcommands share: the engines (runtime, storage, staging), the
/// ranks a command runs on (all in this process, or this process's rank under mpirun),
/// a progress line for the terminal, and byte/size formatting.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "corockpt/ckpt/checkpoint_io.hpp"
#include "corockpt/plugins/comm/communicator.hpp"
#include "corockpt/plugins/storage/make_storage.hpp"

namespace corockpt::cli {

/// The runtime, storage plugin and staging buffers of one command.
class Engines {
 public:
  /// The staging pool by default: 32 buffers of 4 MiB.
  static constexpr std::size_t kDefaultStagingMib = 128;
  /// `staging_mib` MiB of staging buffers: 4 MiB each, or a quarter of the pool each
  /// when that is smaller, so that a small pool still has 4 buffers in flight.
  /// @returns make_storage's and BufferPool::create's errors.
  static Result<std::unique_ptr<Engines>> make(StorageKind kind, std::size_t staging_mib = kDefaultStagingMib);
  CheckpointIo io() { return {&runtime_, storage_.get(), staging_.get()}; }
  Runtime& runtime() { return runtime_; }

 private:
  Engines() = default;
  Runtime runtime_;  // first: outlives the storage
  std::unique_ptr<Storage> storage_;
  std::unique_ptr<BufferPool> staging_;
};

/// Options every multi-rank subcommand takes: --backend, --storage, --staging-mib and
/// --deadline.
struct RankOptions {
  std::string backend = "local";
  std::string storage = "auto";
  /// The process's staging pool (Engines::make); every rank in the process shares it.
  std::size_t staging_mib = Engines::kDefaultStagingMib;
  /// Bounds every wait on the other ranks (CommOptions::deadline), MPI's start included.
  double deadline_s = 60;
  CommOptions comm() const;
};
void add_rank_options(CLI::App& cmd, RankOptions& options);
/// `--deadline SECONDS` alone (add_rank_options includes it), and the options it means.
void add_deadline_option(CLI::App& cmd, double& deadline_s);
CommOptions comm_options(double deadline_s);

/// Runs `job(rank, world)` on `world_size` ranks in this process (backend "local") or
/// on this process's rank under mpirun (backend "mpi"; the world size must match), every
/// communication bounded by `options.deadline_s`.
/// Under mpirun, MPI is finalized only when this rank's job succeeded: after a failure a
/// peer may be dead, and MPI_Finalize could wait for it for ever. The process then exits
/// without it (non-zero), which makes mpirun end the job.
/// @returns each local rank's result, in rank order.
using RankJob = std::function<Task<std::string>(int rank, std::shared_ptr<Communicator> world)>;
Result<std::vector<Result<std::string>>> run_ranks(Engines& engines, const RankOptions& options, int world_size,
                                                   const RankJob& job);

/// "1.50 GiB", "512 B".
std::string human_bytes(double bytes);

/// A line on stderr showing bytes done, rate and ETA, redrawn at most 10 times a second,
/// and only when stderr is a terminal (quiet in a pipe or a log). Thread-safe.
class ProgressLine {
 public:
  explicit ProgressLine(std::string label);
  ~ProgressLine() { finish(); }
  /// Adds to the total this line tracks (ranks register their share).
  void add_total(std::uint64_t bytes);
  void add_done(std::uint64_t bytes);
  /// A callback for SaveOptions/LoadOptions::progress: reports deltas of `done`.
  std::function<void(std::uint64_t, std::uint64_t)> rank_callback();
  void finish();

 private:
  void draw(bool last);
  std::mutex mutex_;
  std::string label_;
  bool enabled_;
  bool finished_ = false;
  std::uint64_t total_ = 0;
  std::uint64_t done_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point drawn_{};
};

/// Prints "corockpt <command>: <error>" on stderr and returns 1.
int report_error(const std::string& command, const Error& error);

}  // namespace corockpt::cli
