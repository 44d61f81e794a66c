#include "tools/corockpt/cli_support.hpp"

#include <algorithm>
#include <cstdio>
#include <unistd.h>

#include "corockpt/ckpt/resource_bounds.hpp"
#include "corockpt/plugins/comm/local/local_communicator.hpp"
#include "corockpt/plugins/comm/mpi/mpi_communicator.hpp"

namespace corockpt::cli {

Result<std::unique_ptr<Engines>> Engines::make(StorageKind kind, std::size_t staging_mib) {
  std::unique_ptr<Engines> engines(new Engines());
  auto storage = make_storage(engines->runtime_, kind);
  if (!storage) return fail(storage.error());
  engines->storage_ = std::move(*storage);
  // By default 32 writes of 4 MiB in flight: enough to keep an NVMe queue busy, 128 MiB in
  // all. A smaller pool keeps at least 4 buffers (of a quarter of it each, page multiples).
  const std::size_t pool_bytes = std::max<std::size_t>(staging_mib, 1) << 20;
  const std::size_t buffer_bytes = std::min<std::size_t>(4 << 20, pool_bytes / 4);
  auto staging = BufferPool::create({.buffer_bytes = buffer_bytes, .buffer_count = pool_bytes / buffer_bytes},
                                    make_host_allocator());
  if (!staging) return fail(staging.error());
  engines->staging_ = std::move(*staging);
  engines->storage_->register_buffers(engines->staging_->regions());
  return engines;
}

CommOptions comm_options(double deadline_s) {
  CommOptions options;
  options.deadline = std::chrono::milliseconds(static_cast<std::int64_t>(deadline_s * 1000));
  return options;
}

CommOptions RankOptions::comm() const { return comm_options(deadline_s); }

void add_deadline_option(CLI::App& cmd, double& deadline_s) {
  cmd.add_option("--deadline", deadline_s,
                 "seconds any wait on the other ranks may take (MPI's start and end, each collective) before the "
                 "command fails, naming a dead peer where it can")
      ->default_val(deadline_s)
      ->check(CLI::Range(0.001, 86400.0));
}

void add_rank_options(CLI::App& cmd, RankOptions& options) {
  cmd.add_option("--backend", options.backend, "local (ranks in this process) or mpi (under mpirun)")
      ->check(CLI::IsMember({"local", "mpi"}));
  cmd.add_option("--storage", options.storage, "auto (io_uring, else posix), uring or posix")
      ->check(CLI::IsMember({"auto", "uring", "posix"}));
  cmd.add_option("--staging-mib", options.staging_mib,
                 "MiB of staging buffers in this process, shared by its ranks (4 MiB each, at least 4 buffers; many "
                 "processes on one host each hold their own pool)")
      ->default_val(options.staging_mib)
      ->check(CLI::Range(1, 65536));
  add_deadline_option(cmd, options.deadline_s);
}

Result<std::vector<Result<std::string>>> run_ranks(Engines& engines, const RankOptions& options, int world_size,
                                                   const RankJob& job) {
  Runtime& runtime = engines.runtime();
  std::vector<Result<std::string>> results;
  if (options.backend == "mpi") {
    auto world = make_mpi_world(runtime, options.comm());
    if (!world) return fail(world.error());
    if ((*world)->size() != world_size) {
      return fail(Errc::invalid_argument, "the spec is for " + std::to_string(world_size) + " ranks but mpirun started " +
                                              std::to_string((*world)->size()));
    }
    results.push_back(runtime.spawn(job((*world)->rank(), *world)).get());
    world->reset();
    if (!results.front()) return results;  // no MPI_Finalize: see the header
    if (auto done = finalize_mpi(options.comm().deadline); !done) return fail(done.error());
    return results;
  }
  if (auto fits = check_ranks_in_process(world_size); !fits) return fail(fits.error());
  auto world = make_local_world(runtime, world_size, options.comm());
  if (!world) return fail(world.error());
  std::vector<TaskHandle<std::string>> handles;
  for (int r = 0; r < world_size; ++r) handles.push_back(runtime.spawn(runtime.make_strand(), job(r, (*world)[r])));
  for (auto& handle : handles) results.push_back(handle.get());
  return results;
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024 && unit < 4) {
    bytes /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.2f %s", bytes, units[unit]);
  return text;
}

ProgressLine::ProgressLine(std::string label) : label_(std::move(label)), enabled_(::isatty(STDERR_FILENO) == 1) {}

void ProgressLine::add_total(std::uint64_t bytes) {
  std::lock_guard lock(mutex_);
  total_ += bytes;
}

void ProgressLine::add_done(std::uint64_t bytes) {
  std::lock_guard lock(mutex_);
  done_ += bytes;
  draw(false);
}

std::function<void(std::uint64_t, std::uint64_t)> ProgressLine::rank_callback() {
  // Each rank reports its own (done, total); the line adds the deltas.
  auto last = std::make_shared<std::pair<std::uint64_t, std::uint64_t>>(0, 0);
  return [this, last](std::uint64_t done, std::uint64_t total) {
    if (total != last->second) add_total(total - last->second);
    add_done(done - last->first);
    *last = {done, total};
  };
}

void ProgressLine::finish() {
  std::lock_guard lock(mutex_);
  if (finished_) return;
  finished_ = true;
  draw(true);
}

void ProgressLine::draw(bool last) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (!last && now - drawn_ < std::chrono::milliseconds(100)) return;
  drawn_ = now;
  const double seconds = std::chrono::duration<double>(now - start_).count();
  const double rate = seconds > 0 ? done_ / seconds : 0;
  const double eta = rate > 0 && total_ > done_ ? (total_ - done_) / rate : 0;
  std::fprintf(stderr, "\r%s %s / %s  %s/s  ETA %.0f s   %s", label_.c_str(), human_bytes(done_).c_str(),
               human_bytes(total_).c_str(), human_bytes(rate).c_str(), eta, last ? "\n" : "");
  std::fflush(stderr);
}

int report_error(const std::string& command, const Error& error) {
  std::fprintf(stderr, "corockpt %s: %s\n", command.c_str(), error.to_string().c_str());
  return 1;
}

}  // namespace corockpt::cli
