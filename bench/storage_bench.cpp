// corockpt_bench_storage: streaming-write throughput and CPU cost of the `uring` and
// `posix` storage plugins, against fio running the matching io_uring job.
//
// Each run writes S GiB as F files with O_DIRECT, blocks of --block-size from
// --queue-depth writers that walk the files round-robin, then fsyncs every file. The
// disk is shared and noisy (one fio job varies 2x between runs), so the three are
// alternated (fio, uring, posix) for --pairs rounds, and the summary is the median of
// the per-round ratios with their spread. The last line is `uring/fio = X.XX`.
//
// Timing, ours: from before creating the files to after the last fsync. fio: its own
// reported job runtime (see bench::run_fio). CPU: getrusage deltas, RUSAGE_SELF around
// our runs and RUSAGE_CHILDREN around waiting for fio.

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bench/bench_support.hpp"
#include "corockpt/plugins/storage/make_storage.hpp"
#include "corockpt/runtime/buffer_pool.hpp"
#include "corockpt/runtime/runtime.hpp"
#include "corockpt/runtime/when_all.hpp"

namespace corockpt {
namespace {

using bench::Clock;
using bench::cpu_seconds;
using bench::gib;
using bench::mib;
using bench::seconds_since;

struct Options {
  double size_gib = 4.0;
  std::size_t files = 8;
  std::size_t pairs = 5;
  std::size_t block_size = 1 << 20;
  unsigned queue_depth = 32;
  std::string dir;  // empty: a fresh corockpt-bench-<pid> under the current directory
};

/// What every run writes: `files` files of `file_bytes` each, in blocks of `block`.
struct Plan {
  std::string dir;
  std::size_t files = 0;
  std::size_t block = 0;
  unsigned depth = 0;
  std::uint64_t file_bytes = 0;

  std::uint64_t total_bytes() const { return file_bytes * files; }
  std::uint64_t total_blocks() const { return total_bytes() / block; }
};

/// One run's cost: wall seconds and CPU seconds (user + system).
struct Measurement {
  double seconds = 0;
  double cpu_seconds = 0;
};

struct Rate {
  double gb_per_s = 0;
  double cpu_s_per_gib = 0;
};

struct Round {
  Rate fio, uring, posix;
};

Rate rate_of(const Measurement& m, std::uint64_t bytes) {
  const double b = static_cast<double>(bytes);
  return {b / 1e9 / m.seconds, m.cpu_seconds / (b / static_cast<double>(gib))};
}

std::string format_bytes(std::uint64_t bytes) {
  char text[32];
  if (bytes % mib == 0) {
    std::snprintf(text, sizeof text, "%llu MiB", static_cast<unsigned long long>(bytes / mib));
  } else if (bytes % 1024 == 0) {
    std::snprintf(text, sizeof text, "%llu KiB", static_cast<unsigned long long>(bytes / 1024));
  } else {
    std::snprintf(text, sizeof text, "%llu bytes", static_cast<unsigned long long>(bytes));
  }
  return text;
}

// ---------------------------------------------------------------- files and space

std::string file_path(const Plan& plan, std::string_view engine, std::size_t index) {
  return plan.dir + "/" + std::string(engine) + "." + std::to_string(index);
}

/// Removes `engine`'s files of one run (not timed). A file already gone is fine.
Result<void> remove_run_files(const Plan& plan, std::string_view engine) {
  for (std::size_t i = 0; i < plan.files; ++i) {
    const std::string path = file_path(plan, engine, i);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return fail(system_error(errno, "unlink", path));
  }
  return {};
}

struct BenchDir {
  std::string path;
  bool created = false;  // ours to remove at the end
};

Result<BenchDir> prepare_dir(const std::string& requested) {
  BenchDir dir{requested, false};
  if (dir.path.empty()) {
    char cwd[4096];
    if (::getcwd(cwd, sizeof cwd) == nullptr) return fail(system_error(errno, "getcwd"));
    dir.path = std::string(cwd) + "/corockpt-bench-" + std::to_string(::getpid());
  }
  if (::mkdir(dir.path.c_str(), 0755) == 0) {
    dir.created = true;
  } else if (errno != EEXIST || requested.empty()) {
    return fail(system_error(errno, "mkdir", dir.path));  // the default must be fresh
  }
  return dir;
}

/// Best effort: whatever an interrupted run left behind, then the directory if we made it.
void clean_up(const BenchDir& dir, std::size_t files) {
  Plan plan{.dir = dir.path, .files = files};
  for (auto engine : {"fio", "uring", "posix"}) (void)remove_run_files(plan, engine);
  ::unlink(bench::fio_output_path(dir.path).c_str());
  if (dir.created) ::rmdir(dir.path.c_str());
}

/// Bytes one run may write and still leave 1 GiB + 10% of the filesystem free.
Result<std::uint64_t> writable_bytes(const std::string& dir) {
  auto space = bench::disk_space(dir);
  if (!space) return fail(space.error());
  const std::uint64_t keep = gib + space->size / 10;
  return space->available > keep ? space->available - keep : 0;
}

/// The plan for `options`, scaled down to the free space (saying so).
Result<Plan> make_plan(const Options& options, const std::string& dir) {
  auto allowed = writable_bytes(dir);
  if (!allowed) return fail(allowed.error());
  const auto requested = static_cast<std::uint64_t>(std::llround(options.size_gib * static_cast<double>(gib)));
  const std::uint64_t total = std::min(requested, *allowed);
  if (total < requested) {
    std::printf("free space: scaling %.2f GiB down to %.2f GiB (keeping 1 GiB + 10%% of the filesystem free)\n",
                static_cast<double>(requested) / gib, static_cast<double>(total) / gib);
  }
  Plan plan{dir, options.files, options.block_size, options.queue_depth, 0};
  // Whole blocks per file, so that O_DIRECT never sees a partial block.
  plan.file_bytes = total / plan.files / plan.block * plan.block;
  if (plan.file_bytes == 0) {
    return fail(total < requested ? Errc::no_space : Errc::invalid_argument, "too little to write: " + std::to_string(total) + " bytes cannot make " +
                                    std::to_string(plan.files) + " files of whole " + format_bytes(plan.block) +
                                    " blocks", {.path = dir});
  }
  return plan;
}

// ---------------------------------------------------------------- our engines

/// Hands out (file, offset) blocks walking the files round-robin, like fio's
/// file_service_type=roundrobin. Touched only from the io thread, so it needs no lock.
class BlockCursor {
 public:
  struct Block {
    std::size_t file;
    std::uint64_t offset;
  };

  explicit BlockCursor(const Plan& plan) : plan_(plan) {}

  std::optional<Block> next() {
    if (stopped_ || next_ == plan_.total_blocks()) return std::nullopt;
    const std::uint64_t i = next_++;
    return Block{static_cast<std::size_t>(i % plan_.files), i / plan_.files * plan_.block};
  }
  /// After a failed write: the other writers finish their block and stop.
  void stop() { stopped_ = true; }

 private:
  const Plan& plan_;
  std::uint64_t next_ = 0;
  bool stopped_ = false;
};

/// One writer: its own buffer for its whole life, blocks from `cursor` until none are left.
Task<void> write_blocks(Storage& storage, BufferPool& pool, std::vector<File>& files, BlockCursor& cursor,
                        std::size_t block) {
  auto buffer = co_await pool.acquire();
  if (!buffer) co_return fail(std::move(buffer.error()));
  const std::span<const std::byte> data = buffer->bytes().first(block);
  while (auto next = cursor.next()) {
    auto written = co_await storage.write_at(files[next->file], next->offset, data);
    if (!written) {
      cursor.stop();
      co_return written;
    }
  }
  co_return Result<void>{};
}

Task<std::vector<File>> open_files(Storage& storage, const Plan& plan, bool& said_buffered) {
  std::vector<File> files;
  for (std::size_t i = 0; i < plan.files; ++i) {
    auto file = co_await storage.open(file_path(plan, storage.name(), i), {OpenMode::truncate, DirectIo::prefer});
    if (!file) co_return fail(std::move(file.error()));
    if (!file->direct() && !said_buffered) {
      said_buffered = true;
      std::printf("note: %s opened buffered, not O_DIRECT (the filesystem refuses it; tmpfs?)\n",
                  file->path().c_str());
    }
    files.push_back(std::move(*file));
  }
  co_return files;
}

Task<void> write_all(Storage& storage, BufferPool& pool, const Plan& plan, std::vector<File>& files) {
  BlockCursor cursor(plan);
  std::vector<Task<void>> writers;
  for (unsigned i = 0; i < plan.depth; ++i) writers.push_back(write_blocks(storage, pool, files, cursor, plan.block));
  auto written = co_await when_all(std::move(writers));
  co_return all_ok(written);
}

Task<void> fsync_all(Storage& storage, std::vector<File>& files) {
  std::vector<Task<void>> syncs;
  for (auto& file : files) syncs.push_back(storage.fsync(file));
  auto synced = co_await when_all(std::move(syncs));
  co_return all_ok(synced);
}

/// One timed run of `storage`: create the files, write them, fsync them.
Task<Measurement> engine_run(Storage& storage, BufferPool& pool, const Plan& plan, bool& said_buffered) {
  const auto start = Clock::now();
  const double cpu_start = cpu_seconds(RUSAGE_SELF);
  auto files = co_await open_files(storage, plan, said_buffered);
  if (!files) co_return fail(std::move(files.error()));
  // Reserve every file's space first, as the checkpoint writer does (it knows its file
  // sizes): O_DIRECT writes into reserved space go straight to the device, while writes
  // that extend a file are handed to io_uring's worker threads one at a time per file.
  for (auto& file : *files) {
    if (auto ok = co_await storage.allocate(file, plan.file_bytes); !ok) co_return fail(std::move(ok.error()));
  }
  if (auto ok = co_await write_all(storage, pool, plan, *files); !ok) co_return fail(std::move(ok.error()));
  if (auto ok = co_await fsync_all(storage, *files); !ok) co_return fail(std::move(ok.error()));
  co_return Measurement{seconds_since(start), cpu_seconds(RUSAGE_SELF) - cpu_start};
  // The files close here, untimed.
}

// ---------------------------------------------------------------- fio

Result<Measurement> fio_run(const Plan& plan) {
  const bench::FioJob job{.name = "corockpt-bench", .dir = plan.dir, .write = true, .block = plan.block,
                          .depth = plan.depth, .files = plan.files, .file_bytes = plan.file_bytes};
  auto run = bench::run_fio(job);
  if (!run) return fail(run.error());
  return Measurement{run->seconds, run->cpu_seconds};
}

// ---------------------------------------------------------------- the rounds

struct Engines {
  Runtime& runtime;
  Storage& uring;
  Storage& posix;
  BufferPool& pool;
  bool said_buffered = false;
};

void print_run(std::size_t round, std::string_view name, const Rate& rate) {
  std::printf("round %zu  %-5.*s  %5.2f GB/s   %6.3f CPU s/GiB\n", round, static_cast<int>(name.size()),
              name.data(), rate.gb_per_s, rate.cpu_s_per_gib);
  std::fflush(stdout);
}

Result<Rate> timed_engine(Engines& engines, Storage& storage, const Plan& plan) {
  auto measured = engines.runtime.spawn(engine_run(storage, engines.pool, plan, engines.said_buffered)).get();
  if (!measured) return fail(measured.error());
  if (auto ok = remove_run_files(plan, storage.name()); !ok) return fail(ok.error());
  return rate_of(*measured, plan.total_bytes());
}

Result<Round> run_round(Engines& engines, const Plan& plan, std::size_t number) {
  Round round;
  auto fio = fio_run(plan);
  if (!fio) return fail(fio.error());
  if (auto ok = remove_run_files(plan, "fio"); !ok) return fail(ok.error());
  round.fio = rate_of(*fio, plan.total_bytes());
  print_run(number, "fio", round.fio);

  auto uring = timed_engine(engines, engines.uring, plan);
  if (!uring) return fail(uring.error());
  round.uring = *uring;
  print_run(number, "uring", round.uring);

  auto posix = timed_engine(engines, engines.posix, plan);
  if (!posix) return fail(posix.error());
  round.posix = *posix;
  print_run(number, "posix", round.posix);
  return round;
}

using bench::spread_over;

void print_summary(const std::vector<Round>& rounds) {
  const auto vs_fio = spread_over(rounds, [](const Round& r) { return r.uring.gb_per_s / r.fio.gb_per_s; });
  const auto vs_posix = spread_over(rounds, [](const Round& r) { return r.uring.gb_per_s / r.posix.gb_per_s; });
  const auto cpu = spread_over(rounds, [](const Round& r) { return r.posix.cpu_s_per_gib / r.uring.cpu_s_per_gib; });
  const auto cpu_fio = spread_over(rounds, [](const Round& r) { return r.fio.cpu_s_per_gib; });
  const auto cpu_uring = spread_over(rounds, [](const Round& r) { return r.uring.cpu_s_per_gib; });
  const auto cpu_posix = spread_over(rounds, [](const Round& r) { return r.posix.cpu_s_per_gib; });
  std::printf("median uring/fio %.2f (min %.2f, max %.2f)\n", vs_fio.median, vs_fio.min, vs_fio.max);
  std::printf("median uring/posix %.2f (min %.2f, max %.2f)\n", vs_posix.median, vs_posix.min, vs_posix.max);
  std::printf("median CPU s/GiB: fio %.3f, uring %.3f, posix %.3f; posix/uring %.2f (min %.2f, max %.2f)\n",
              cpu_fio.median, cpu_uring.median, cpu_posix.median, cpu.median, cpu.min, cpu.max);
  std::printf("uring/fio = %.2f\n", vs_fio.median);
}

Result<void> run_bench(Runtime& runtime, Storage& uring, Storage& posix, const Options& options,
                       const BenchDir& dir) {
  auto plan = make_plan(options, dir.path);
  if (!plan) return fail(plan.error());
  auto pool = BufferPool::create({.buffer_bytes = plan->block, .buffer_count = plan->depth, .alignment = 4096},
                                 make_host_allocator());
  if (!pool) return fail(pool.error());
  // Incompressible bytes, so no layer below can shortcut the writes.
  for (std::size_t i = 0; i < (*pool)->buffer_count(); ++i) bench::fill_random((*pool)->regions()[i], i + 1);

  std::printf("corockpt_bench_storage: %.2f GiB as %zu files, block %s, depth %u, %zu rounds, dir %s\n",
              static_cast<double>(plan->total_bytes()) / gib, plan->files, format_bytes(plan->block).c_str(),
              plan->depth, options.pairs, plan->dir.c_str());
  Engines engines{runtime, uring, posix, **pool};
  const bool registered = uring.register_buffers((*pool)->regions());
  std::printf("registered buffers: %s by uring\n", registered ? "accepted" : "refused");
  std::printf("posix: %zu worker threads, one per write in flight\n", runtime.worker_count());
  std::fflush(stdout);

  std::vector<Round> rounds;
  for (std::size_t i = 1; i <= options.pairs; ++i) {
    auto round = run_round(engines, *plan, i);
    if (!round) return fail(round.error());
    rounds.push_back(*round);
  }
  print_summary(rounds);
  return {};
}

void add_options(CLI::App& app, Options& options) {
  app.add_option("--size-gib", options.size_gib, "GiB written per run (scaled down to the free space)")
      ->check(CLI::Range(0.001, 1e6));
  app.add_option("--files", options.files, "files per run")->check(CLI::Range(1, 4096));
  app.add_option("--pairs", options.pairs, "rounds of fio, uring, posix")->check(CLI::Range(1, 1000));
  app.add_option("--block-size", options.block_size, "bytes per write, a multiple of 4096")
      ->check(CLI::Range(std::size_t{4096}, std::size_t{1} << 30));
  app.add_option("--queue-depth", options.queue_depth, "writes in flight")->check(CLI::Range(1u, 1024u));
  app.add_option("--dir", options.dir, "directory for the files (default: a fresh ./corockpt-bench-<pid>)");
}

}  // namespace
}  // namespace corockpt

int main(int argc, char** argv) {
  using namespace corockpt;
  CLI::App app{"Streaming-write throughput of the uring and posix storage plugins against fio"};
  Options options;
  add_options(app, options);
  CLI11_PARSE(app, argc, argv);
  if (options.block_size % 4096 != 0) {
    std::fprintf(stderr, "corockpt_bench_storage: --block-size must be a multiple of 4096 (O_DIRECT)\n");
    return 1;
  }
  if (!bench::on_path("fio")) {
    std::fprintf(stderr, "corockpt_bench_storage: fio is not installed (not found on PATH); "
                         "install it (apt-get install fio) to compare against it\n");
    return 2;
  }

  // As many workers as writes in flight, so that posix (one blocking pwrite per worker)
  // has the same depth as uring and fio.
  Runtime runtime(RuntimeOptions{.worker_threads = options.queue_depth});
  auto uring = make_storage(runtime, StorageKind::uring, {options.queue_depth});
  if (!uring) {
    std::fprintf(stderr, "corockpt_bench_storage: io_uring is unavailable: %s\n", uring.error().to_string().c_str());
    return 2;
  }
  auto posix = make_storage(runtime, StorageKind::posix);
  if (!posix) {
    std::fprintf(stderr, "corockpt_bench_storage: %s\n", posix.error().to_string().c_str());
    return 1;
  }
  auto dir = prepare_dir(options.dir);
  if (!dir) {
    std::fprintf(stderr, "corockpt_bench_storage: %s\n", dir.error().to_string().c_str());
    return 1;
  }
  auto done = run_bench(runtime, **uring, **posix, options, *dir);
  clean_up(*dir, options.files);
  if (!done) {
    std::fprintf(stderr, "corockpt_bench_storage: %s\n", done.error().to_string().c_str());
    return 1;
  }
  return 0;
}
