// corockpt_bench_save: save_checkpoint of an MoE-shaped model on 8 in-process ranks,
// against fio writing the same bytes (io_uring, O_DIRECT) and torch.save + fsync; then a
// load of that checkpoint resharded onto 6 ranks, against fio reading the same bytes.
//
// The model (built in code): mesh "global" [8] and "dp_ep" [2, 4]; three dense `flat`
// units on all 8 ranks (weight [R, H] and bias [H] each) and an expert unit on dp_ep
// with 8 experts (w1 [F, H], w2 [H, F]; experts split over ep, Shard(0) over dp), Adam,
// float32; R and F are chosen so that params + exp_avg + exp_avg_sq make --size-gib.
// The load model is the same on 6 ranks: "global" [6], "dp_ep" [3, 2] (4 experts a rank,
// 3-way uneven shards).
//
// Each save round alternates: (A) save_checkpoint on the 8 ranks into a fresh directory,
// timed from the call to the commit on every rank (removing it is not timed); (B) fio,
// one io_uring job writing 8 files round-robin, bs 4 MiB, iodepth 32, O_DIRECT,
// fallocate=native, end_fsync=1 (its own reported runtime, as bench/bench_support.cpp
// explains); (C) torch.save of the same tensors (one dict per rank, created before its
// clock starts) + fsync of each file, through Debian's python3-torch (/usr/bin/python3)
// running bench/torch_save_job.py (--torch-script names another copy).
// Summary: the median of the per-round ratios with their spread (min..max); the last
// line is `save/fio = X.XX`.
//
// Load rounds alternate (A) load_checkpoint on 6 ranks of the last checkpoint saved and
// (B) fio reading the 8 files of its last write round (io_uring, O_DIRECT). Loads read
// with O_DIRECT too; the page cache cannot be dropped without root, so before each load
// the checkpoint's pages are evicted with posix_fadvise(DONTNEED) anyway (no root
// needed; clean pages go) and the fraction still resident (mincore) is printed. Each
// load prints its peak extra memory: the process's high-water mark (VmHWM, reset through
// /proc/self/clear_refs just before) minus the model's bytes (params, buffers and
// optimizer states: what the load fills).
//
// Consolidation rounds alternate (A) consolidate_checkpoint of that checkpoint (every
// tensor, optimizer states included) into a fresh directory and (B) `dd iflag=direct
// oflag=direct bs=4M conv=fsync` of its data files, one after another, into another;
// each is timed to its last fsync and rated by the bytes it wrote.
//
// Where the time goes: the storage plugins record every write_at, read_at and fsync as a
// span; each round prints the time to the first operation, the mean operations in
// flight, the share of the round with none in flight, and the tail after the last one.
// `--mark-clock` prints CLOCK_MONOTONIC around each timed run, for
// `perf record -k CLOCK_MONOTONIC` + `perf report --time FROM,TO`.
//
// `--staging both` adds (D) each round: the same save with the staging buffers on 4 KiB
// pages (SmallPageAllocator below) instead of the host allocator's transparent huge
// pages, to show what those gain.
//
// Sizes: --size-gib is scaled down, with a message, to a third of the free disk (the
// checkpoint, fio's files and torch's may coexist) and to 40% of MemAvailable (the
// model and torch's copy of it). Everything goes into a fresh corockpt-bench-save-<pid>
// under --dir, removed at the end.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench/bench_support.hpp"
#include "corockpt/ckpt/consolidate.hpp"
#include "corockpt/ckpt/load.hpp"
#include "corockpt/ckpt/local_chunks.hpp"
#include "corockpt/ckpt/model.hpp"
#include "corockpt/ckpt/model_spec.hpp"
#include "corockpt/ckpt/save.hpp"
#include "corockpt/plugins/comm/local/local_communicator.hpp"
#include "corockpt/plugins/storage/make_storage.hpp"
#include "corockpt/runtime/buffer_pool.hpp"
#include "corockpt/runtime/runtime.hpp"
#include "fixtures/known_values.hpp"

namespace corockpt {
namespace {

using bench::die;
using bench::gib;
using bench::mib;
using bench::take;

constexpr std::int64_t hidden = 1024;  // H
constexpr int num_experts = 8;
constexpr int fio_files = 8;  // one per saving rank
constexpr std::uint64_t fio_block = 4 * mib;
constexpr unsigned fio_depth = 32;
constexpr const char* system_python = "/usr/bin/python3";  // Debian's, with python3-torch

struct Options {
  double size_gib = 4.0;
  std::size_t pairs = 5;
  std::size_t load_pairs = 5;
  std::string dir = "/tmp";  // the parent of a fresh corockpt-bench-save-<pid>
  std::string storage = "auto";
  std::string staging = "default";  // default (the CLI's: huge pages), small (4 KiB pages), or both
  int torch_threads = 8;
  int load_concurrency = LoadOptions{}.concurrency;
  bool mark_clock = false;  // print CLOCK_MONOTONIC around each timed run
  std::string torch_script = COROCKPT_TORCH_SAVE_JOB;  // bench/torch_save_job.py in the source tree
};

// For `perf record -k CLOCK_MONOTONIC` and `perf report --time FROM,TO`: seconds.micros.
double monotonic_now() {
  timespec t{};
  ::clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

void mark(bool on, const char* what, std::size_t round, double from) {
  if (on) std::printf("clock: %s round %zu %.6f,%.6f\n", what, round, from, monotonic_now());
}

// ---------------------------------------------------------------- the model

struct Shape {
  std::int64_t dense_rows = 0;   // R
  std::int64_t expert_rows = 0;  // F
  std::uint64_t state_bytes() const {
    const std::int64_t params = 3 * (dense_rows * hidden + hidden) + num_experts * 2 * expert_rows * hidden;
    return static_cast<std::uint64_t>(params) * 4 * 3;  // float32; param, exp_avg, exp_avg_sq
  }
};

// A quarter of the params dense, three quarters in the experts.
Shape shape_for(std::uint64_t bytes) {
  const double params = static_cast<double>(bytes) / 12.0;
  auto multiple_of_8 = [](double rows) { return std::max<std::int64_t>(8, static_cast<std::int64_t>(rows) / 8 * 8); };
  return {multiple_of_8(params / 4 / 3 / hidden), multiple_of_8(params * 3 / 4 / (2.0 * num_experts * hidden))};
}

ModelSpec make_spec(int world, int dp, int ep, const Shape& shape) {
  ModelSpec spec;
  spec.world_size = world;
  spec.meshes.push_back(MeshSpec{"global", {world}, {"fsdp"}});
  spec.meshes.push_back(MeshSpec{"dp_ep", {dp, ep}, {"dp", "ep"}});
  for (const char* name : {"embed", "attn", "head"}) {
    UnitSpec unit;
    unit.name = name;
    unit.prefix = std::string(name) + ".";
    unit.mesh = "global";
    unit.layout = UnitLayout::flat;
    spec.units.push_back(unit);
    spec.params.push_back(ParamSpec{.unit = name, .name = "weight", .shape = {shape.dense_rows, hidden}});
    spec.params.push_back(ParamSpec{.unit = name, .name = "bias", .shape = {hidden}});
  }
  UnitSpec experts;
  experts.name = "experts";
  experts.prefix = "moe.experts.{expert}.";
  experts.mesh = "dp_ep";
  experts.layout = UnitLayout::flat;
  experts.shard_dim = "dp";
  experts.expert_dim = "ep";
  experts.num_experts = num_experts;
  spec.units.push_back(experts);
  spec.params.push_back(ParamSpec{.unit = "experts", .name = "w1.weight", .shape = {shape.expert_rows, hidden}});
  spec.params.push_back(ParamSpec{.unit = "experts", .name = "w2.weight", .shape = {hidden, shape.expert_rows}});
  spec.optimizer = OptimizerSpec{};  // Adam
  if (auto ok = validate(spec); !ok) die("the model spec: " + ok.error().to_string());
  return spec;
}

Task<std::unique_ptr<Model>> build_rank(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> world) {
  auto model = co_await Model::build(spec, rank, std::move(world));
  if (!model) co_return fail(model.error().with_rank(rank));
  co_return std::move(*model);
}

bool is_state(const LocalChunk& chunk) { return chunk.name.starts_with("state."); }

/// The ranks of one world: their models, built and with memory. Params hold their known
/// values (fixtures::fill_known_values); with `fill_states`, optimizer states hold random
/// bytes (fill_known_state would hash a name per element: minutes at 4 GiB).
struct Ranks {
  std::vector<std::shared_ptr<Communicator>> world;
  std::vector<std::unique_ptr<Model>> models;
};

Ranks make_ranks(Runtime& runtime, const ModelSpec& spec, bool fill_states) {
  Ranks ranks;
  ranks.world = take(make_local_world(runtime, spec.world_size), "make_local_world");
  std::vector<TaskHandle<std::unique_ptr<Model>>> handles;
  for (int r = 0; r < spec.world_size; ++r) {
    handles.push_back(runtime.spawn(runtime.make_strand(), build_rank(spec, r, ranks.world[r])));
  }
  for (auto& handle : handles) ranks.models.push_back(take(handle.get(), "Model::build"));
  // Every param element gets its known value: on two threads (the cores).
  auto work = [&](std::size_t first) {
    for (std::size_t r = first; r < ranks.models.size(); r += 2) {
      ranks.models[r]->allocate();
      fixtures::fill_known_values(*ranks.models[r]);
      if (!fill_states) continue;
      auto chunks = take(LocalChunks::of(*ranks.models[r]), "LocalChunks::of");
      for (const auto& chunk : chunks.chunks()) {
        if (!is_state(chunk) || chunk.name.ends_with(".step")) continue;
        // Incompressible, non-zero bytes: no layer below may shortcut zeros.
        bench::fill_random(chunk.bytes, std::hash<std::string>{}(chunk.name) + r);
      }
    }
  };
  std::thread helper(work, 1);
  work(0);
  helper.join();
  return ranks;
}

// ---------------------------------------------------------------- the checkpoint's files

/// Bytes of `dir`'s regular files, recursively.
std::uint64_t tree_bytes(const std::string& dir) {
  std::uint64_t total = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) total += entry.file_size();
  }
  return total;
}

std::vector<std::string> data_files(const std::string& ckpt) {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(ckpt)) {
    if (entry.path().extension() == ".safetensors") files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

/// Fraction of `files`' pages in the page cache (mincore).
double cached_fraction(const std::vector<std::string>& files) {
  const long page = ::sysconf(_SC_PAGESIZE);
  std::uint64_t resident = 0, pages = 0;
  for (const auto& path : files) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    struct stat st {};
    if (::fstat(fd, &st) == 0 && st.st_size > 0) {
      const auto size = static_cast<std::size_t>(st.st_size);
      void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
      if (map != MAP_FAILED) {
        std::vector<unsigned char> vec((size + page - 1) / page);
        if (::mincore(map, size, vec.data()) == 0) {
          for (unsigned char v : vec) resident += v & 1;
          pages += vec.size();
        }
        ::munmap(map, size);
      }
    }
    ::close(fd);
  }
  return pages ? static_cast<double>(resident) / static_cast<double>(pages) : 0.0;
}

/// Evicts `files`' clean pages from the page cache (no root needed, unlike drop_caches).
void evict(const std::vector<std::string>& files) {
  for (const auto& path : files) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

// ---------------------------------------------------------------- fio

struct Measurement {
  double seconds = 0;
  double cpu_seconds = 0;
  std::uint64_t bytes = 0;
  double gb_per_s() const { return static_cast<double>(bytes) / 1e9 / seconds; }
  double cpu_per_gib() const { return cpu_seconds / (static_cast<double>(bytes) / static_cast<double>(gib)); }
};

/// fio writing (or reading back) `job`'s files.
Measurement fio_run(bench::FioJob job, bool write) {
  job.write = write;
  const auto run = take(bench::run_fio(job), "fio");
  return {run.seconds, run.cpu_seconds, job.total_bytes()};
}

void remove_fio_files(const bench::FioJob& job) {
  for (std::size_t i = 0; i < job.files; ++i) ::unlink((job.dir + "/fio." + std::to_string(i)).c_str());
}

// ---------------------------------------------------------------- torch.save

bool torch_available() {
  if (::access(system_python, X_OK) != 0) return false;
  const auto run = bench::run_child({system_python, "-c", "import torch"}, /*quiet=*/true);
  return run && run->ok();
}

struct TorchJob {
  std::string job_path;
  std::string result_path;
  std::vector<std::string> files;
};

/// Describes the torch job (bench/torch_save_job.py runs it): per saving rank, one file of
/// its written chunks (same names, same bytes as float32 tensors; Adam's steps as 0-d
/// tensors).
TorchJob make_torch_job(Ranks& ranks, const std::string& dir, int threads) {
  TorchJob job{dir + "/torch-job.json", dir + "/torch-result.json", {}};
  nlohmann::json files = nlohmann::json::array();
  for (auto& model : ranks.models) {
    auto chunks = take(LocalChunks::of(*model), "LocalChunks::of");
    nlohmann::json tensors = nlohmann::json::array();
    int k = 0;
    for (const auto& chunk : chunks.chunks()) {
      if (!chunk.writer || chunk.box.empty()) continue;
      const std::int64_t n = chunk.box.ndim() == 0 ? -1 : static_cast<std::int64_t>(chunk.bytes.size() / 4);
      tensors.push_back({chunk.name + "#" + std::to_string(k++), n});
    }
    const std::string path = dir + "/torch." + std::to_string(model->rank()) + ".pt";
    job.files.push_back(path);
    files.push_back({{"path", path}, {"tensors", std::move(tensors)}});
  }
  const nlohmann::json description = {{"files", files}, {"threads", threads}, {"result", job.result_path}};
  std::ofstream(job.job_path) << description.dump();
  return job;
}

Measurement torch_run(const TorchJob& job, const std::string& script) {
  const auto run = take(bench::run_child({system_python, script, job.job_path}), "the torch.save job");
  if (!run.ok()) die("the torch.save job failed (status " + std::to_string(run.status) + "); its messages are above");
  const auto json = nlohmann::json::parse(bench::read_text(job.result_path), nullptr, /*allow_exceptions=*/false);
  ::unlink(job.result_path.c_str());
  if (json.is_discarded() || !json.contains("seconds")) die("the torch.save job wrote no result");
  for (const auto& file : job.files) ::unlink(file.c_str());
  return {json["seconds"].get<double>(), json["cpu"].get<double>(), json["bytes"].get<std::uint64_t>()};
}

// ---------------------------------------------------------------- where the time goes

// From the storage plugin's spans (write_at / read_at / fsync) of one timed run. "In
// flight" counts from the operation's call, so it includes time queued in the ring.
struct IoProfile {
  std::size_t ops = 0;
  double first_op_s = 0;      // from the call to the first operation
  double mean_in_flight = 0;  // operation time summed / [first start, last end]
  double idle_share = 0;      // share of [first start, last end] with none in flight
  double median_op_ms = 0;
  double fsync_tail_s = 0;   // last operation's end -> last fsync's end
  double commit_tail_s = 0;  // the later of those -> every rank returned
};

/// The profile of the `op` spans ("write_at" or "read_at") of one run.
IoProfile profile_spans(const std::vector<SpanRecord>& spans, std::string_view op, std::int64_t start_ns,
                        std::int64_t end_ns) {
  IoProfile p;
  std::vector<std::pair<std::int64_t, std::int64_t>> ops;
  std::int64_t last_fsync = start_ns;
  for (const auto& s : spans) {
    if (s.name == op) ops.emplace_back(s.start_ns, s.start_ns + s.duration_ns);
    if (s.name == "fsync") last_fsync = std::max(last_fsync, s.start_ns + s.duration_ns);
  }
  if (ops.empty()) return p;
  std::sort(ops.begin(), ops.end());
  p.ops = ops.size();
  const std::int64_t first = ops.front().first;
  std::int64_t last = first, busy = 0, summed = 0, covered_to = first;
  std::vector<double> durations;
  for (auto [b, e] : ops) {
    summed += e - b;
    durations.push_back(static_cast<double>(e - b) / 1e6);
    last = std::max(last, e);
    if (e > covered_to) {
      busy += e - std::max(b, covered_to);
      covered_to = e;
    }
  }
  std::sort(durations.begin(), durations.end());
  const double window = static_cast<double>(std::max<std::int64_t>(last - first, 1));
  p.first_op_s = static_cast<double>(first - start_ns) / 1e9;
  p.mean_in_flight = static_cast<double>(summed) / window;
  p.idle_share = 1.0 - static_cast<double>(busy) / window;
  p.median_op_ms = durations[durations.size() / 2];
  p.fsync_tail_s = static_cast<double>(std::max<std::int64_t>(last_fsync - last, 0)) / 1e9;
  p.commit_tail_s = static_cast<double>(std::max<std::int64_t>(end_ns - std::max(last_fsync, last), 0)) / 1e9;
  return p;
}

// ---------------------------------------------------------------- the runs

/// Staging memory on 4 KiB pages (MADV_NOHUGEPAGE), touched now so the pages exist: what
/// the host allocator gave before it used transparent huge pages. A 4 MiB O_DIRECT write
/// from 4 KiB pages has 1024 segments, more than a virtio disk's max_segments (254), so
/// the block layer splits it into 5 requests; from 2 MiB pages it has 2 and goes as one.
class SmallPageAllocator final : public BufferAllocator {
 public:
  Result<std::byte*> allocate(std::size_t bytes, std::size_t alignment) override {
    (void)alignment;  // mmap's 4096 is all anyone asks for
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return fail(system_error(errno, "mmap"));
    ::madvise(p, bytes, MADV_NOHUGEPAGE);
    std::memset(p, 0, bytes);
    return static_cast<std::byte*>(p);
  }
  void deallocate(std::byte* memory, std::size_t bytes) override { ::munmap(memory, bytes); }
  std::string_view name() const override { return "host (4 KiB pages)"; }
};

/// This process's anonymous memory on huge pages (/proc/self/smaps_rollup), in bytes.
std::uint64_t anon_huge_bytes() {
  std::ifstream in("/proc/self/smaps_rollup");
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("AnonHugePages:")) return std::stoull(line.substr(14)) * 1024;
  }
  return 0;
}

/// A storage plugin and its staging buffers on the shared runtime.
struct Engines {
  Runtime& runtime;
  std::unique_ptr<Storage> storage;
  std::unique_ptr<BufferPool> staging;
  bool registered = false;
  bool small_pages = false;
  CheckpointIo io() { return {&runtime, storage.get(), staging.get()}; }
};

// As the CLI makes them (tools/corockpt/cli_support.cpp): 32 staging buffers of 4 MiB,
// offered to the storage for registration; from 4 KiB pages with `small_pages`.
std::unique_ptr<Engines> make_engines(Runtime& runtime, StorageKind kind, bool small_pages) {
  auto engines = std::make_unique<Engines>(Engines{runtime, nullptr, nullptr, false, small_pages});
  engines->storage = take(make_storage(runtime, kind), "make_storage");
  std::shared_ptr<BufferAllocator> allocator = make_host_allocator();
  if (small_pages) allocator = std::make_shared<SmallPageAllocator>();
  engines->staging =
      take(BufferPool::create({.buffer_bytes = 4 << 20, .buffer_count = 32}, allocator), "BufferPool::create");
  engines->registered = engines->storage->register_buffers(engines->staging->regions());
  return engines;
}

/// The clocks of one timed run, with the storage plugin's spans recorded: wall and CPU
/// (RUSAGE_SELF) from construction to stop().
class TracedClocks {
 public:
  struct Reading {
    double seconds = 0;
    double cpu_seconds = 0;
    IoProfile profile;  // of the `op` spans
  };

  explicit TracedClocks(Runtime& runtime) : runtime_(runtime) {
    runtime_.tracer().clear();
    runtime_.tracer().enable(true);
    cpu_start_ = bench::cpu_seconds(RUSAGE_SELF);
    start_ns_ = runtime_.tracer().now_ns();
    start_ = bench::Clock::now();
  }

  /// Stops the clocks and the tracing; profiles the `op` spans ("write_at" or "read_at").
  Reading stop(std::string_view op) {
    const double seconds = bench::seconds_since(start_);
    const std::int64_t end_ns = runtime_.tracer().now_ns();
    const double cpu = bench::cpu_seconds(RUSAGE_SELF) - cpu_start_;
    runtime_.tracer().enable(false);
    return {seconds, cpu, profile_spans(runtime_.tracer().spans(), op, start_ns_, end_ns)};
  }

 private:
  Runtime& runtime_;
  double cpu_start_ = 0;
  std::int64_t start_ns_ = 0;
  bench::Clock::time_point start_;
};

struct SaveRun {
  Measurement m;
  IoProfile profile;
  std::size_t files = 0;  // data files, all ranks
};

SaveRun save_run(Engines& engines, Ranks& ranks, const std::string& ckpt) {
  Runtime& runtime = engines.runtime;
  SaveOptions options;  // checksums on (the default 1 MiB blocks)
  TracedClocks clocks(runtime);
  std::vector<TaskHandle<SaveReport>> handles;
  for (auto& model : ranks.models) {
    handles.push_back(runtime.spawn(runtime.make_strand(), save_checkpoint(*model, engines.io(), ckpt, options)));
  }
  std::uint64_t bytes = 0;
  std::size_t files = 0;
  for (auto& handle : handles) {
    const auto report = take(handle.get(), "save_checkpoint");
    bytes = report.total_bytes;
    files += report.rank_files;
  }
  const auto reading = clocks.stop("write_at");
  return {{reading.seconds, reading.cpu_seconds, bytes}, reading.profile, files};
}

struct LoadRun {
  Measurement m;
  std::uint64_t bytes_read = 0;
  IoProfile profile;  // of the reads
};

LoadRun load_run(Engines& engines, Ranks& ranks, const std::string& ckpt, std::uint64_t ckpt_bytes, int concurrency) {
  Runtime& runtime = engines.runtime;
  LoadOptions options;
  options.concurrency = concurrency;
  TracedClocks clocks(runtime);
  std::vector<TaskHandle<LoadReport>> handles;
  for (auto& model : ranks.models) {
    handles.push_back(runtime.spawn(runtime.make_strand(), load_checkpoint(*model, engines.io(), ckpt, options)));
  }
  std::uint64_t read = 0;
  for (auto& handle : handles) read += take(handle.get(), "load_checkpoint").bytes_read;
  const auto reading = clocks.stop("read_at");
  return {{reading.seconds, reading.cpu_seconds, ckpt_bytes}, read, reading.profile};
}

// A "<field>:   123 kB" line of /proc/self/status, in bytes.
std::uint64_t status_bytes(std::string_view field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with(field) && line.size() > field.size() && line[field.size()] == ':') {
      return std::stoull(line.substr(field.size() + 1)) * 1024;
    }
  }
  die("no " + std::string(field) + " in /proc/self/status");
}

// The process's peak resident memory since the last reset_peak_memory.
std::uint64_t peak_memory() { return status_bytes("VmHWM"); }
std::uint64_t resident_memory() { return status_bytes("VmRSS"); }

// Resets VmHWM to the resident memory now (Linux 4.0+).
void reset_peak_memory() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  if (!clear) die("cannot reset the peak memory through /proc/self/clear_refs");
}

// consolidate_checkpoint of `ckpt`, every tensor (optimizer states too), into `out`.
Measurement consolidate_run(Engines& engines, const std::string& ckpt, const std::string& out) {
  Runtime& runtime = engines.runtime;
  ConsolidateOptions options;
  options.optimizer_states = true;
  const double cpu = bench::cpu_seconds(RUSAGE_SELF);
  const auto start = bench::Clock::now();
  const auto report =
      take(runtime.spawn(runtime.make_strand(), consolidate_checkpoint(engines.io(), ckpt, out, options)).get(),
           "consolidate_checkpoint");
  return {bench::seconds_since(start), bench::cpu_seconds(RUSAGE_SELF) - cpu, report.bytes};
}

// dd of each of `files` into `out`, one after another, with direct I/O both ways and an
// fsync at the end of each: the reference for consolidate.
Measurement copy_run(const std::vector<std::string>& files, const std::string& out) {
  std::filesystem::create_directories(out);
  std::uint64_t bytes = 0;
  double cpu = 0;
  const auto start = bench::Clock::now();
  for (const auto& file : files) {
    const std::string to = out + "/" + std::filesystem::path(file).filename().string();
    const auto run = take(bench::run_child({"dd", "if=" + file, "of=" + to, "iflag=direct", "oflag=direct", "bs=4M",
                                            "conv=fsync", "status=none"}),
                          "dd");
    if (!run.ok()) die("dd " + file + " failed");
    cpu += run.cpu_seconds;
    bytes += std::filesystem::file_size(file);
  }
  return {bench::seconds_since(start), cpu, bytes};
}

using bench::spread_of;

void print_run(const char* phase, std::size_t round, const char* name, const Measurement& m) {
  std::printf("%s round %zu  %-12s %6.3f GB/s  %6.2f s  %6.3f CPU s/GiB\n", phase, round, name, m.gb_per_s(), m.seconds,
              m.cpu_per_gib());
  std::fflush(stdout);
}

std::string fmt(const char* format, double a, double b = 0, double c = 0) {
  char text[256];
  std::snprintf(text, sizeof text, format, a, b, c);
  return text;
}

int run(const Options& options) {
  const auto kind = take(parse_storage_kind(options.storage), "--storage");
  if (!bench::on_path("fio")) {
    std::fprintf(stderr, "corockpt_bench_save: fio is not installed (not found on PATH); apt-get install fio\n");
    return 2;
  }
  const std::string dir = bench::make_scratch_dir(options.dir, "corockpt-bench-save");
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{dir};

  // Space: the checkpoint, fio's files and torch's files may coexist (3x); memory: the
  // 8-rank model and torch's copy of it (then the 6-rank model and its read buffers).
  const auto requested = static_cast<std::uint64_t>(std::llround(options.size_gib * static_cast<double>(gib)));
  std::uint64_t size = bench::fit_to_free_space(requested, dir, 3);
  const std::uint64_t memory = bench::memory_available();
  if (memory != 0 && 5 * size / 2 > memory) {
    size = memory * 2 / 5;
    std::printf("memory: %.2f GiB available, less than 2.5x the state: scaling down to %.2f GiB\n",
                static_cast<double>(memory) / gib, static_cast<double>(size) / gib);
  }
  const Shape shape = shape_for(size);
  if (size < 64 * mib) die("too little room for a meaningful run (" + std::to_string(size) + " bytes)");
  const ModelSpec spec8 = make_spec(8, 2, 4, shape);
  const ModelSpec spec6 = make_spec(6, 3, 2, shape);

  Runtime runtime;  // first: outlives the storages and the ranks
  auto engines = make_engines(runtime, kind, options.staging == "small");
  std::unique_ptr<Engines> small_engines;
  if (options.staging == "both") small_engines = make_engines(runtime, kind, true);
  const bool torch = torch_available();
  if (torch && ::access(options.torch_script.c_str(), R_OK) != 0) {
    die("cannot read the torch.save job " + options.torch_script + " (--torch-script names it)");
  }
  std::printf("corockpt_bench_save: %.3f GiB of state (3 dense units [%lld, %lld] + bias, %d experts w1 [%lld, %lld] "
              "w2 [%lld, %lld], float32, Adam), 8 ranks (mesh 2x4); %zu save pairs, %zu load pairs; dir %s\n",
              static_cast<double>(shape.state_bytes()) / gib, static_cast<long long>(shape.dense_rows),
              static_cast<long long>(hidden), num_experts, static_cast<long long>(shape.expert_rows),
              static_cast<long long>(hidden), static_cast<long long>(hidden), static_cast<long long>(shape.expert_rows),
              options.pairs, options.load_pairs, dir.c_str());
  std::printf("engines: storage %s, staging 32 x 4 MiB from %s (registered: %s), %zu worker threads; checksums on "
              "(CRC-32C per 1 MiB)\n",
              std::string(engines->storage->name()).c_str(), engines->staging->allocator_name().data(),
              engines->registered ? "yes" : "no", runtime.worker_count());
  if (small_engines) {
    std::printf("extra contender: corockpt-4k, the same with staging from %s (registered: %s)\n",
                small_engines->staging->allocator_name().data(), small_engines->registered ? "yes" : "no");
  }
  std::printf("fio: io_uring, O_DIRECT, bs 4 MiB, iodepth %u, %d files, end_fsync; torch: %s\n", fio_depth, fio_files,
              torch ? "python3-torch via /usr/bin/python3" : "skipped");
  std::printf("note: the page cache cannot be dropped without root; writes are O_DIRECT (fio, corockpt) or end in "
              "fsync (torch), and before each load the checkpoint's pages are evicted with fadvise(DONTNEED)\n");
  std::fflush(stdout);

  auto setup = bench::Clock::now();
  Ranks ranks8 = make_ranks(runtime, spec8, /*fill_states=*/true);
  std::printf("setup: 8-rank model allocated and filled in %.1f s\n", bench::seconds_since(setup));
  std::fflush(stdout);

  std::optional<TorchJob> torch_job;
  if (torch) torch_job = make_torch_job(ranks8, dir, options.torch_threads);
  else std::printf("torch_save: skipped (%s cannot import torch: install python3-torch)\n", system_python);

  // ---- save rounds: A corockpt, B fio, C torch.save
  std::vector<double> save_fio, save_torch, small_fio, small_save, small_torch;
  std::vector<Measurement> saves, fios, torches, smalls;
  std::uint64_t ckpt_bytes = 0;
  // fio's files: one per saving rank, their size known after the first save.
  bench::FioJob fio_job{.name = "corockpt-bench-save", .dir = dir, .write = true, .block = fio_block,
                        .depth = fio_depth, .files = fio_files, .file_bytes = 0};
  std::string last_ckpt;
  for (std::size_t i = 1; i <= options.pairs; ++i) {
    const std::string ckpt = dir + "/ckpt-" + std::to_string(i);
    const double save_mark = monotonic_now();
    auto save = save_run(*engines, ranks8, ckpt);
    mark(options.mark_clock, "save", i, save_mark);
    ckpt_bytes = save.m.bytes;
    if (fio_job.file_bytes == 0) {  // fio's share of a rank: the nearest whole number of blocks
      fio_job.file_bytes = std::max<std::uint64_t>(1, (ckpt_bytes / fio_files + fio_block / 2) / fio_block) * fio_block;
    }
    print_run("save", i, "corockpt", save.m);
    const auto& p = save.profile;
    std::printf("               %zu data files, writes %zu, median %.1f ms; first write after %.3f s; %.1f in flight "
                "on average, none in flight %.1f%% of the time; fsync tail %.3f s, commit tail %.3f s\n",
                save.files, p.ops, p.median_op_ms, p.first_op_s, p.mean_in_flight, 100 * p.idle_share, p.fsync_tail_s,
                p.commit_tail_s);
    if (i < options.pairs || options.load_pairs == 0) {
      std::filesystem::remove_all(ckpt);
    } else {
      last_ckpt = ckpt;
    }
    const auto fio = fio_run(fio_job, /*write=*/true);
    print_run("save", i, "fio", fio);
    if (i < options.pairs || options.load_pairs == 0) remove_fio_files(fio_job);  // the last ones are read back
    saves.push_back(save.m);
    fios.push_back(fio);
    save_fio.push_back(save.m.gb_per_s() / fio.gb_per_s());
    if (torch_job) {
      const auto t = torch_run(*torch_job, options.torch_script);
      print_run("save", i, "torch.save", t);
      torches.push_back(t);
      save_torch.push_back(save.m.gb_per_s() / t.gb_per_s());
    }
    if (small_engines) {
      const std::string small_ckpt = dir + "/ckpt-4k-" + std::to_string(i);
      auto small = save_run(*small_engines, ranks8, small_ckpt);
      print_run("save", i, "corockpt-4k", small.m);
      std::printf("               writes %zu, median %.1f ms; %.1f in flight on average, none in flight %.1f%% of "
                  "the time\n",
                  small.profile.ops, small.profile.median_op_ms, small.profile.mean_in_flight, 100 * small.profile.idle_share);
      std::filesystem::remove_all(small_ckpt);
      smalls.push_back(small.m);
      small_fio.push_back(small.m.gb_per_s() / fio.gb_per_s());
      small_save.push_back(small.m.gb_per_s() / save.m.gb_per_s());
      if (!torches.empty()) small_torch.push_back(small.m.gb_per_s() / torches.back().gb_per_s());
    }
  }
  ranks8.models.clear();  // the memory goes back before the 6-rank model takes as much

  // ---- load rounds: A corockpt resharded 8 -> 6, B fio direct reads
  std::vector<double> load_fio, consolidate_copy;
  std::vector<Measurement> loads, fio_reads, consolidates, copies;
  std::uint64_t peak_extra = 0;
  if (!last_ckpt.empty()) {
    setup = bench::Clock::now();
    Ranks ranks6 = make_ranks(runtime, spec6, /*fill_states=*/false);
    std::printf("setup: 6-rank model (mesh 3x2) allocated in %.1f s; loading %s (%.3f GiB of data files), %d reads "
                "in flight per rank\n",
                bench::seconds_since(setup), last_ckpt.c_str(), static_cast<double>(tree_bytes(last_ckpt)) / gib,
                options.load_concurrency);
    const auto files = data_files(last_ckpt);
    std::uint64_t model_bytes = 0;  // what the load fills: params, buffers, optimizer states
    for (auto& model : ranks6.models) {
      auto chunks = take(LocalChunks::of(*model), "LocalChunks::of");
      for (const auto& chunk : chunks.chunks()) model_bytes += chunk.bytes.size();
    }
    for (std::size_t i = 1; i <= options.load_pairs; ++i) {
      const double cached_before = cached_fraction(files);
      evict(files);
      const double cached_after = cached_fraction(files);
      // Poison the params: the check below sees what this load wrote.
      for (auto& model : ranks6.models) {
        auto chunks = take(LocalChunks::of(*model), "LocalChunks::of");
        for (auto& chunk : chunks.chunks()) std::memset(chunk.bytes.data(), 0xff, chunk.bytes.size());
      }
      const std::uint64_t resident_before = resident_memory();
      reset_peak_memory();
      const double load_mark = monotonic_now();
      auto load = load_run(*engines, ranks6, last_ckpt, ckpt_bytes, options.load_concurrency);
      mark(options.mark_clock, "load", i, load_mark);
      const std::uint64_t peak = peak_memory();
      const std::uint64_t extra = peak > model_bytes ? peak - model_bytes : 0;
      peak_extra = std::max(peak_extra, extra);
      print_run("load", i, "corockpt", load.m);
      std::printf("               peak memory (VmHWM) %.1f MiB = the model %.1f MiB + %.1f MiB extra (the staging "
                  "pool, the program); %.1f MiB above the resident memory before the load\n",
                  static_cast<double>(peak) / mib, static_cast<double>(model_bytes) / mib,
                  static_cast<double>(extra) / mib,
                  static_cast<double>(peak > resident_before ? peak - resident_before : 0) / mib);
      const auto& p = load.profile;
      std::printf("               read %.3f GiB (whole checksum blocks) in %zu reads (%.1f MiB each), median %.1f ms; "
                  "first read after %.3f s; %.1f in flight on average, none in flight %.1f%% of the time; tail after "
                  "the last read %.3f s; page cache before: %.0f%% resident, %.0f%% after eviction\n",
                  static_cast<double>(load.bytes_read) / gib, p.ops,
                  p.ops ? static_cast<double>(load.bytes_read) / static_cast<double>(p.ops) / mib : 0.0,
                  p.median_op_ms, p.first_op_s, p.mean_in_flight, 100 * p.idle_share, p.commit_tail_s,
                  100 * cached_before, 100 * cached_after);
      const auto fio = fio_run(fio_job, /*write=*/false);
      print_run("load", i, "fio read", fio);
      loads.push_back(load.m);
      fio_reads.push_back(fio);
      load_fio.push_back(load.m.gb_per_s() / fio.gb_per_s());
    }
    // The params hold their known values (the states were random bytes: not checked).
    std::int64_t checked = 0;
    for (auto& model : ranks6.models) {
      auto chunks = take(LocalChunks::of(*model), "LocalChunks::of");
      std::vector<LocalChunk> params;
      for (const auto& chunk : chunks.chunks()) {
        if (!is_state(chunk)) params.push_back(chunk);
      }
      const auto check = fixtures::check_known_values(params);
      if (!check.ok()) die("after the load, rank " + std::to_string(model->rank()) + ": " + *check.first_mismatch);
      checked += check.checked;
    }
    std::printf("load check: %lld param elements on 6 ranks equal their known values\n",
                static_cast<long long>(checked));
    remove_fio_files(fio_job);
    ranks6.models.clear();

    // ---- consolidation rounds: A consolidate_checkpoint, B dd of the data files
    for (std::size_t i = 1; i <= std::min<std::size_t>(options.load_pairs, 3); ++i) {
      evict(files);
      const std::string out = dir + "/consolidated";
      const auto consolidated = consolidate_run(*engines, last_ckpt, out);
      print_run("consolidate", i, "corockpt", consolidated);
      std::filesystem::remove_all(out);
      evict(files);
      const std::string copy_dir = dir + "/copied";
      const auto copied = copy_run(files, copy_dir);
      print_run("consolidate", i, "dd copy", copied);
      std::filesystem::remove_all(copy_dir);
      consolidates.push_back(consolidated);
      copies.push_back(copied);
      consolidate_copy.push_back(consolidated.gb_per_s() / copied.gb_per_s());
    }
    std::filesystem::remove_all(last_ckpt);
  }

  // ---- summary (the last line is save/fio)
  auto median_rate = [](const std::vector<Measurement>& ms) {
    std::vector<double> v;
    for (const auto& m : ms) v.push_back(m.gb_per_s());
    return spread_of(v).median;
  };
  auto median_cpu = [](const std::vector<Measurement>& ms) {
    std::vector<double> v;
    for (const auto& m : ms) v.push_back(m.cpu_per_gib());
    return spread_of(v).median;
  };
  if (!loads.empty()) {
    const auto ratio = spread_of(load_fio);
    std::printf("median load 8->6: corockpt %.3f GB/s, fio read %.3f GB/s; CPU s/GiB corockpt %.3f, fio %.3f\n",
                median_rate(loads), median_rate(fio_reads), median_cpu(loads), median_cpu(fio_reads));
    std::printf("%s", fmt("load/fio median %.2f (spread %.2f..%.2f)\n", ratio.median, ratio.min, ratio.max).c_str());
    std::printf("load/fio = %.2f\n", ratio.median);
    std::printf("load_cpu_s_per_gib = %.3f\n", median_cpu(loads));
    std::printf("load_peak_extra_mib = %.1f (VmHWM minus the model; the staging pool is %.0f MiB, shared by the 6 ranks)\n",
                static_cast<double>(peak_extra) / mib, static_cast<double>(engines->staging->total_bytes()) / mib);
  }
  if (!consolidates.empty()) {
    const auto ratio = spread_of(consolidate_copy);
    std::printf("median consolidate: corockpt %.3f GB/s, dd copy %.3f GB/s; CPU s/GiB corockpt %.3f, dd %.3f\n",
                median_rate(consolidates), median_rate(copies), median_cpu(consolidates), median_cpu(copies));
    std::printf("%s", fmt("consolidate/copy median %.2f (spread %.2f..%.2f)\n", ratio.median, ratio.min, ratio.max)
                          .c_str());
    std::printf("consolidate/copy = %.2f\n", ratio.median);
  }
  std::printf("median save: corockpt %.3f GB/s, fio %.3f GB/s", median_rate(saves), median_rate(fios));
  if (!torches.empty()) std::printf(", torch.save %.3f GB/s", median_rate(torches));
  std::printf("; CPU s/GiB corockpt %.3f, fio %.3f", median_cpu(saves), median_cpu(fios));
  if (!torches.empty()) std::printf(", torch.save %.3f", median_cpu(torches));
  std::printf("\n");
  std::printf("huge pages: %.0f MiB of this process's memory is on transparent huge pages (staging, model)\n",
              static_cast<double>(anon_huge_bytes()) / mib);
  const auto vs_fio = spread_of(save_fio);
  if (!smalls.empty()) {
    const auto a = spread_of(small_fio), b = spread_of(small_save);
    std::printf("median save corockpt-4k %.3f GB/s; CPU s/GiB %.3f\n", median_rate(smalls), median_cpu(smalls));
    std::printf("%s", fmt("save(4k)/fio median %.2f (spread %.2f..%.2f)\n", a.median, a.min, a.max).c_str());
    std::printf("%s", fmt("save(4k)/save median %.2f (spread %.2f..%.2f)\n", b.median, b.min, b.max).c_str());
    if (!small_torch.empty()) {
      const auto c = spread_of(small_torch);
      std::printf("%s", fmt("save(4k)/torch_save median %.2f (spread %.2f..%.2f)\n", c.median, c.min, c.max).c_str());
    }
  }
  if (!torches.empty()) {
    const auto vs_torch = spread_of(save_torch);
    std::printf("%s", fmt("save/torch_save median %.2f (spread %.2f..%.2f)\n", vs_torch.median, vs_torch.min,
                          vs_torch.max).c_str());
  }
  std::printf("%s", fmt("save/fio median %.2f (spread %.2f..%.2f)\n", vs_fio.median, vs_fio.min, vs_fio.max).c_str());
  if (!torches.empty()) {
    std::printf("save/torch_save = %.2f\n", spread_of(save_torch).median);
  } else {
    std::printf("torch_save: skipped\n");
  }
  std::printf("save/fio = %.2f\n", vs_fio.median);
  return 0;
}

}  // namespace
}  // namespace corockpt

int main(int argc, char** argv) {
  using namespace corockpt;
  CLI::App app{"save_checkpoint on 8 ranks against fio and torch.save; load resharded 8 -> 6 against fio"};
  Options options;
  app.add_option("--size-gib", options.size_gib, "GiB of model state (params + Adam states), scaled to the free space")
      ->check(CLI::Range(0.01, 1e5));
  app.add_option("--pairs", options.pairs, "save rounds (corockpt, fio, torch.save)")->check(CLI::Range(1, 1000));
  app.add_option("--load-pairs", options.load_pairs, "load rounds (corockpt, fio read); 0: no load")
      ->check(CLI::Range(0, 1000));
  app.add_option("--dir", options.dir, "parent of the bench's fresh directory (default /tmp)")
      ->check(CLI::ExistingDirectory);
  app.add_option("--storage", options.storage, "auto (io_uring, else posix), uring or posix")
      ->check(CLI::IsMember({"auto", "uring", "posix"}));
  app.add_option("--staging", options.staging,
                 "staging memory: default (the host allocator's, as the CLI: 2 MiB transparent huge pages), small "
                 "(4 KiB pages), or both (small as a fourth contender each round)")
      ->check(CLI::IsMember({"default", "small", "both"}));
  app.add_option("--load-concurrency", options.load_concurrency, "LoadOptions::concurrency: reads in flight per rank")
      ->check(CLI::Range(1, 1024));
  app.add_option("--torch-threads", options.torch_threads,
                 "threads saving the torch files at once (1: one after another)")
      ->check(CLI::Range(1, 64));
  app.add_option("--torch-script", options.torch_script,
                 "the torch.save job (default: bench/torch_save_job.py of the source tree this was built from)")
      ->check(CLI::ExistingFile);
  app.add_flag("--mark-clock", options.mark_clock,
               "print CLOCK_MONOTONIC around each timed save and load (for perf record -k CLOCK_MONOTONIC)");
  CLI11_PARSE(app, argc, argv);
  bench::set_program_name("corockpt_bench_save");
  return run(options);
}
