// corockpt_bench_plan: what a save's and a load's planning cost at thousands of ranks,
// measured in one process without any data (issue 18). Every stage runs the library's
// own code:
//
// 1. rank plans: for each of the N ranks, Model::build (over a communicator that only
//    says who the rank is: the groups it would split are not needed to plan),
//    LocalChunks::of (views of null memory of the right sizes), layout_data_files,
//    chunk_placement (each chunk's byte range and a checksum list of the length the
//    save fills), detail::rank_plan: the plan rank 0 receives, and the rank's index,
//    written (not fsynced: each rank writes its own, in parallel, beside its data) into a
//    scratch directory under --dir. Only the plans are kept, back to back, as
//    gather_texts lands them (and then split per rank, as it does). --sample-ranks K plans
//    K ranks spread over the world instead, scales their bytes and chunks to it and skips
//    the later stages (for worlds whose every plan would take too long).
// 2. merge: detail::merge_plans, as commit_save on rank 0 (every plan decoded, every
//    tensor's runs extended and its tiling checked), on every core; run --merges times.
// 3. index and header: detail::plan_commit's encoding, the header's to_json_text, each
//    written and fsynced with detail::write_durable_file, as commit_save does. Then the
//    next save of the same layout, as an AsyncCheckpointer's: every plan replaced by
//    detail::cached_plan, plan_commit with the PlanCache of the first, the writes.
// 4. load plans: for each of the M load ranks, Model::build and LocalChunks::of on the
//    spec scaled to M (not timed: the model exists before a load), then, timed,
//    CheckpointReader::open_for (the header, the tensor index, and the indexes of the
//    ranks whose chunks it overlaps), detail::find_read_needs and detail::plan_reads (the
//    limits read_limits gives for the CLI's 4 MiB staging buffers and O_DIRECT): load_from
//    without its reads. The files are in the page cache, as they are after the save.
//    The ranks sampled within --load-budget-s are planned in --load-repeats passes.
//
// A stage that is the same work each time counts its least time: this machine is shared,
// and its stalls (up to seconds, in some runs) only add.
//
// Each stage prints its wall and CPU time, the bytes it sends to rank 0 or reads, and the
// process's peak memory (VmHWM, reset before the stage). The last lines are
// `name = value`: plan_s (the least merge + index and header writes), plan_cached_s (the cached
// re-save's), metadata_mib (the most one
// load rank reads to plan: header, tensor index, rank indexes), load_plan_ms (the slowest
// load rank's stage 4, each rank's the least of its repeats), bytes_to_rank0_mib, chunks.

#include <unistd.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_support.hpp"
#include "corockpt/ckpt/checkpoint_reader.hpp"
#include "corockpt/ckpt/data_file_layout.hpp"
#include "corockpt/ckpt/data_file_writer.hpp"
#include "corockpt/ckpt/detail/directory_commit.hpp"
#include "corockpt/ckpt/detail/rank_plan.hpp"
#include "corockpt/ckpt/detail/read_plan.hpp"
#include "corockpt/ckpt/format/chunk_index.hpp"
#include "corockpt/ckpt/format/crc32c.hpp"
#include "corockpt/ckpt/local_chunks.hpp"
#include "corockpt/ckpt/model.hpp"
#include "corockpt/ckpt/model_spec.hpp"
#include "corockpt/ckpt/save.hpp"
#include "corockpt/ckpt/save_steps.hpp"
#include "corockpt/plugins/storage/make_storage.hpp"
#include "corockpt/runtime/buffer_pool.hpp"
#include "corockpt/runtime/runtime.hpp"

namespace corockpt {
namespace {

using bench::Clock;
using bench::die;
using bench::mib;
using bench::seconds_since;
using bench::take;

struct Options {
  int ranks = 64;
  std::string spec = COROCKPT_DEFAULT_PLAN_SPEC;
  int load_ranks = 0;  // 0: ranks / 2
  std::string dir = "/tmp";
  double max_memory_gib = 16;
  double load_budget_s = 300;
  int sample_ranks = 0;  // 0: every rank
  int merges = 3;  // plan_s counts the least
  int load_repeats = 3;  // a load rank's plan time is the least of these passes
};

// A rank of a world that exists only on paper: Model::build needs a world of the spec's
// size to split its groups from, but planning never communicates. Every operation fails;
// `split` gives another such communicator (its size unknown, 0: Model::build takes a
// group's ranks from the mesh, never from the communicator).
class PlanningCommunicator final : public Communicator {
 public:
  PlanningCommunicator(int rank, int size, std::string name) : rank_(rank), size_(size), name_(std::move(name)) {}

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view backend() const override { return "planning"; }
  MemorySpace memory_space() const override { return MemorySpace::host; }
  const std::string& name() const override { return name_; }

  Task<void> all_gather(std::span<const std::byte>, std::span<std::byte>) override { co_return refuse(); }
  Task<void> all_gather_v(std::span<const std::byte>, std::span<std::byte>, std::span<const std::size_t>) override {
    co_return refuse();
  }
  Task<void> gather_v(std::span<const std::byte>, std::span<std::byte>, std::span<const std::size_t>, int) override {
    co_return refuse();
  }
  Task<void> broadcast(std::span<std::byte>, int) override { co_return refuse(); }
  Task<void> barrier() override { co_return refuse(); }
  Task<void> send(std::span<const std::byte>, int, int) override { co_return refuse(); }
  Task<void> recv(std::span<std::byte>, int, int) override { co_return refuse(); }
  Task<std::shared_ptr<Communicator>> split(int color, int key) override {
    co_return std::shared_ptr<Communicator>(
        std::make_shared<PlanningCommunicator>(key, 0, name_ + "/split(" + std::to_string(color) + ")"));
  }

 private:
  Result<void> refuse() const {
    return fail(Errc::unavailable, name_ + ": a planning-only communicator moves no bytes");
  }
  int rank_;
  int size_;
  std::string name_;
};

// The spec on `ranks` ranks: each mesh keeps its inner dims and its leading one becomes
// ranks / (the product of the others).
Result<ModelSpec> scale_spec(ModelSpec spec, int ranks) {
  for (MeshSpec& mesh : spec.meshes) {
    std::int64_t inner = 1;
    for (std::size_t d = 1; d < mesh.shape.size(); ++d) inner *= mesh.shape[d];
    if (ranks % inner != 0) {
      return fail(Errc::invalid_argument, std::to_string(ranks) + " ranks do not divide by the " +
                                              std::to_string(inner) + " of mesh " + mesh.name +
                                              "'s inner dims, which stay as they are");
    }
    mesh.shape[0] = ranks / inner;
  }
  spec.world_size = ranks;
  if (auto ok = validate(spec); !ok) return fail(ok.error());
  return spec;
}

// Params of the model (every expert's), and bytes of its state (params + optimizer states).
std::pair<double, double> model_size(const ModelSpec& spec) {
  const std::size_t states = spec.optimizer ? optimizer_state_names(*spec.optimizer).size() : 0;
  double params = 0, bytes = 0;
  for (const ParamSpec& param : spec.params) {
    const UnitSpec* unit = spec.find_unit(param.unit);
    const double n = static_cast<double>(numel(param.shape)) * (unit->has_experts() ? unit->num_experts : 1);
    params += n;
    bytes += n * size_of(param.dtype) * (1 + (param.has_optimizer_state() ? states : 0));
  }
  return {params, bytes};
}

std::uint64_t status_bytes(std::string_view field) {
  const std::string status = bench::read_text("/proc/self/status");
  const auto at = status.find(std::string(field) + ":");
  if (at == std::string::npos) die("no " + std::string(field) + " in /proc/self/status");
  return std::stoull(status.substr(at + field.size() + 1)) * 1024;
}

// VmHWM back to the resident memory now (Linux 4.0+).
void reset_peak_memory() {
  FILE* clear = std::fopen("/proc/self/clear_refs", "w");
  if (!clear || std::fputs("5", clear) < 0 || std::fclose(clear) != 0) {
    die("cannot reset the peak memory through /proc/self/clear_refs");
  }
}

double in_mib(double bytes) { return bytes / static_cast<double>(mib); }
double peak_mib() { return in_mib(static_cast<double>(status_bytes("VmHWM"))); }

Task<std::unique_ptr<Model>> build_model(const ModelSpec& spec, int rank) {
  auto world = std::make_shared<PlanningCommunicator>(rank, spec.world_size, "world");
  co_return co_await Model::build(spec, rank, std::move(world));
}

// Where a rank's planning time goes, summed over ranks.
struct RankPlanTimes {
  double build = 0, chunks = 0, layout = 0, plan = 0, text = 0;
  std::vector<double> per_rank;
};

// The storage a load reads through, counting what it reads (the header, the mapped
// tensor index, the rank indexes) and the rank indexes opened.
class CountingStorage final : public Storage {
 public:
  explicit CountingStorage(Storage& inner) : inner_(inner) {}
  std::string_view name() const override { return inner_.name(); }
  Task<File> open(std::string path, OpenOptions options) override {
    if (path.ends_with("-index.bin")) ++rank_indexes;
    return inner_.open(std::move(path), options);
  }
  Task<void> write_at(File& file, std::uint64_t offset, std::span<const std::byte> data) override {
    return inner_.write_at(file, offset, data);
  }
  Task<std::size_t> read_at(File& file, std::uint64_t offset, std::span<std::byte> data) override {
    auto got = co_await inner_.read_at(file, offset, data);
    if (got) bytes_read += *got;
    co_return got;
  }
  Task<void> fsync(File& file) override { return inner_.fsync(file); }
  Task<void> truncate(File& file, std::uint64_t size) override { return inner_.truncate(file, size); }
  Task<void> allocate(File& file, std::uint64_t size) override { return inner_.allocate(file, size); }
  Task<void> make_dir(std::string path) override { return inner_.make_dir(std::move(path)); }
  Task<void> rename(std::string from, std::string to) override { return inner_.rename(std::move(from), std::move(to)); }
  Task<void> remove(std::string path) override { return inner_.remove(std::move(path)); }
  Task<std::vector<DirEntry>> list(std::string dir) override { return inner_.list(std::move(dir)); }
  Task<void> fsync_dir(std::string path) override { return inner_.fsync_dir(std::move(path)); }
  Task<MappedBytes> map_file(std::string path) override {
    auto mapped = co_await inner_.map_file(std::move(path));
    if (mapped) bytes_read += mapped->bytes.size();
    co_return mapped;
  }

  std::uint64_t bytes_read = 0;  // read or mapped
  std::size_t rank_indexes = 0;

 private:
  Storage& inner_;
};

// The save id every simulated rank's index carries (the header's).
const std::string bench_save_id = "plan-bench";

void write_text(const std::string& path, const std::string& text) {
  FILE* file = std::fopen(path.c_str(), "wb");
  if (!file || std::fwrite(text.data(), 1, text.size(), file) != text.size() || std::fclose(file) != 0) {
    die("cannot write " + path);
  }
}

struct PlannedRank {
  std::string plan;
  std::uint64_t chunks = 0;  // chunk records: what the rank writes
};

// The plan `rank` sends to rank 0 after writing its data, built without data; its index
// is written into `dir`.
PlannedRank plan_rank(Runtime& runtime, const std::string& dir, const ModelSpec& spec, int rank,
                      RankPlanTimes& times) {
  const auto start = Clock::now();
  auto model = take(runtime.spawn(build_model(spec, rank)).get(), "Model::build");
  const auto built = Clock::now();
  LocalChunks chunks = take(LocalChunks::of(*model), "LocalChunks::of");
  const auto listed = Clock::now();
  const std::vector<DataFileLayout> layout = layout_data_files(chunks.chunks(), rank);
  const auto laid_out = Clock::now();
  std::vector<std::vector<WrittenChunk>> written;
  std::uint64_t records = 0;
  std::uint32_t crc = 0x9e3779b9u ^ static_cast<std::uint32_t>(rank);
  for (const DataFileLayout& file : layout) {
    DataFileContent content{.header = file.header};
    for (std::size_t i : file.chunks) content.chunks.push_back(&chunks.chunks()[i]);
    auto& ranges = written.emplace_back(chunk_placement(content, default_checksum_block));
    for (auto& range : ranges) {
      for (auto& sum : range.crc32c) sum = crc = crc * 1664525u + 1013904223u;
    }
    records += ranges.size();
  }
  detail::RankPlan plan = detail::rank_plan(chunks.chunks(), rank, bench_save_id, layout, std::move(written), {});
  const auto planned = Clock::now();
  std::string index = encode_rank_index(std::move(plan.index));
  write_text(dir + "/" + rank_index_file_name(rank), index);
  const auto end = Clock::now();
  auto s = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  times.build += s(start, built);
  times.chunks += s(built, listed);
  times.layout += s(listed, laid_out);
  times.plan += s(laid_out, planned);
  times.text += s(planned, end);
  times.per_rank.push_back(s(start, end));
  return {std::move(plan.plan), records};
}

// Ranks in an order that spreads any prefix of it over the whole world.
std::vector<int> spread_order(int n) {
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  const int step = std::gcd(7919, n) == 1 ? 7919 : 1;
  for (int i = 0; i < n; ++i) order[i] = static_cast<int>((static_cast<std::int64_t>(i) * step) % n);
  return order;
}

// The process's CPU seconds when the current stage began (begin_stage).
double stage_cpu = 0;

// A stage begins: its peak memory and CPU time count from here.
void begin_stage() {
  reset_peak_memory();
  stage_cpu = bench::cpu_seconds(RUSAGE_SELF);
}

// The CPU time beside the wall time: on a machine shared with builds, the wall time of
// this one-thread program stretches, its CPU time much less.
void print_stage(const char* name, double seconds, const std::string& what) {
  std::printf("%-15s %9.3f s (cpu %9.3f s)   peak %8.1f MiB   %s\n", name, seconds,
              bench::cpu_seconds(RUSAGE_SELF) - stage_cpu, peak_mib(), what.c_str());
  std::fflush(stdout);
}

// The figures, `name = value` a line; a figure below 0 was not measured.
int finish(double params, double plan_s, double plan_cached_s, double metadata_bytes, double load_plan_ms,
           std::uint64_t to_rank0, std::uint64_t chunks) {
  std::printf("params = %.4g\n", params);
  auto figure = [](const char* name, double value, double scale, const char* format) {
    std::printf("%s = ", name);
    if (value < 0) {
      std::printf("skipped\n");
    } else {
      std::printf(format, value * scale);
      std::printf("\n");
    }
  };
  figure("plan_s", plan_s, 1, "%.3f");
  figure("plan_cached_s", plan_cached_s, 1, "%.3f");
  figure("metadata_mib", metadata_bytes, 1.0 / static_cast<double>(mib), "%.1f");
  figure("load_plan_ms", load_plan_ms, 1, "%.1f");
  std::printf("bytes_to_rank0_mib = %.1f\n", in_mib(static_cast<double>(to_rank0)));
  std::printf("chunks = %llu\n", (unsigned long long)chunks);
  return 0;
}

int run(const Options& options) {
  const double cap = options.max_memory_gib * static_cast<double>(bench::gib);
  const ModelSpec original = take(load_model_spec(options.spec), "the spec");
  const ModelSpec spec = take(scale_spec(original, options.ranks), "--ranks");
  int load_ranks = options.load_ranks > 0 ? options.load_ranks : std::max(1, options.ranks / 2);
  if (options.load_ranks == 0 && !scale_spec(original, load_ranks)) {
    std::printf("the spec does not scale to %d ranks: the load runs on %d\n", load_ranks, options.ranks);
    load_ranks = options.ranks;
  }
  const ModelSpec load_spec = take(scale_spec(original, load_ranks), "--load-ranks");
  const auto [params, state_bytes] = model_size(spec);
  std::printf("spec %s on %d ranks (load on %d): %.4g params, %.2f TiB with the optimizer's states; meshes",
              options.spec.c_str(), options.ranks, load_ranks, params, state_bytes / (1024.0 * bench::gib));
  for (const MeshSpec& mesh : spec.meshes) {
    std::printf(" %s [", mesh.name.c_str());
    for (std::size_t d = 0; d < mesh.shape.size(); ++d) std::printf("%s%lld", d ? ", " : "", (long long)mesh.shape[d]);
    std::printf("]");
  }
  std::printf("\n");

  Runtime runtime;
  auto storage = take(make_storage(runtime, StorageKind::automatic), "make_storage");
  auto staging =
      take(BufferPool::create({.buffer_bytes = 4 << 20, .buffer_count = 4}, make_host_allocator()), "BufferPool");
  CheckpointIo io{&runtime, storage.get(), staging.get()};
  const std::string dir = bench::make_scratch_dir(options.dir, "corockpt-bench-plan");

  // 1. Every rank's plan, landed back to back as gather_v delivers them to rank 0.
  begin_stage();
  RankPlanTimes times;
  std::string all;
  std::vector<std::size_t> counts;
  std::vector<int> planned_ranks;  // in the order planned
  std::uint64_t to_rank0 = 0, chunks = 0;
  bool keep = true;
  std::string skipped;
  auto start = Clock::now();
  const int planned = options.sample_ranks > 0 ? std::min(options.sample_ranks, options.ranks) : options.ranks;
  if (planned < options.ranks) {
    keep = false;
    skipped = "only " + std::to_string(planned) + " of the " + std::to_string(options.ranks) +
              " ranks were planned (--sample-ranks)";
  }
  const std::vector<int> order = spread_order(options.ranks);
  // The simulated ranks are independent: planned on every core (each rank's own time is
  // still one rank's, on one core), then gathered in order.
  std::vector<PlannedRank> results(static_cast<std::size_t>(planned));
  {
    const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
    std::vector<RankPlanTimes> shares(threads);
    std::atomic<int> next{0};
    std::vector<std::jthread> workers;
    for (unsigned t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        for (int i = next++; i < planned; i = next++) results[i] = plan_rank(runtime, dir, spec, order[i], shares[t]);
      });
    }
    workers.clear();  // joined
    for (const RankPlanTimes& share : shares) {
      times.build += share.build;
      times.chunks += share.chunks;
      times.layout += share.layout;
      times.plan += share.plan;
      times.text += share.text;
      times.per_rank.insert(times.per_rank.end(), share.per_rank.begin(), share.per_rank.end());
    }
  }
  for (int i = 0; i < planned; ++i) {
    const int rank = order[i];
    PlannedRank plan = std::move(results[i]);
    to_rank0 += plan.plan.size() + sizeof(std::uint64_t);  // its plan and its size (all_gather)
    chunks += plan.chunks;
    counts.push_back(plan.plan.size());
    planned_ranks.push_back(rank);
    // gather_texts holds the landed plans and their per-rank copies at once.
    if (keep && 2.0 * static_cast<double>(all.size() + plan.plan.size()) > cap / 2) {
      keep = false;
      skipped = "after " + std::to_string(i) + " ranks the plans were " + std::to_string(all.size() >> 20) +
                " MiB; rank 0 holds them twice during the gather, then merges them: past half the " +
                std::to_string(static_cast<int>(options.max_memory_gib)) + " GiB cap";
      std::string().swap(all);
    }
    if (keep) all += plan.plan;
  }
  const double plans_s = seconds_since(start);
  // A sample stands for the whole world: bytes and chunks scaled by ranks / planned.
  const double scale = static_cast<double>(options.ranks) / planned;
  to_rank0 = static_cast<std::uint64_t>(static_cast<double>(to_rank0) * scale);
  chunks = static_cast<std::uint64_t>(static_cast<double>(chunks) * scale);
  const std::string estimated =
      planned < options.ranks ? " (estimated from " + std::to_string(planned) + " ranks spread over the world)" : "";
  const auto per_rank = bench::spread_of(times.per_rank);
  const double busy = times.build + times.chunks + times.layout + times.plan + times.text;
  char line[512];
  std::snprintf(line, sizeof line,
                "%.1f MiB to rank 0 (%.1f KiB a rank), %llu chunks%s; a rank: median %.1f ms, max %.1f ms "
                "(build %.0f%%, chunks %.0f%%, layout %.0f%%, plan %.0f%%, index %.0f%%)",
                in_mib(static_cast<double>(to_rank0)), static_cast<double>(to_rank0) / options.ranks / 1024,
                (unsigned long long)chunks, estimated.c_str(), per_rank.median * 1e3, per_rank.max * 1e3,
                100 * times.build / busy, 100 * times.chunks / busy, 100 * times.layout / busy,
                100 * times.plan / busy, 100 * times.text / busy);
  print_stage("rank plans", plans_s, line);

  double plan_s = -1, plan_cached_s = -1, metadata_bytes = -1, load_plan_ms = -1;
  if (keep) {
    // gather_texts' split into one text per rank.
    begin_stage();
    start = Clock::now();
    std::vector<std::string> texts(static_cast<std::size_t>(options.ranks));  // in rank order, as gathered
    std::size_t at = 0;
    for (std::size_t i = 0; i < counts.size(); ++i) {
      texts[static_cast<std::size_t>(planned_ranks[i])] = all.substr(at, counts[i]);
      at += counts[i];
    }
    std::string().swap(all);
    print_stage("gather split", seconds_since(start), "gather_texts' copy of each rank's text out of the landed bytes");

    // 2. and 3., as commit_save runs them: the plans merged and encoded, the index and
    // the header written and fsynced.
    std::unique_ptr<Model> rank0 = take(runtime.spawn(build_model(spec, 0)).get(), "Model::build");
    const SaveScope scope = save_scope(*rank0);
    rank0.reset();
    CheckpointMetadata header;
    header.world_size = scope.world_size;
    header.meshes = scope.meshes;
    header.block_size = default_checksum_block;
    std::string header_text;
    // The commit's writes, as commit_save makes them.
    auto write = [&](const std::string& index, const std::string& into) {
      header.index = IndexRecord{std::string(tensor_index_file), index.size(),
                                 crc32c(std::as_bytes(std::span(index))), bench_save_id};
      header_text = to_json_text(header);
      take(runtime.spawn(detail::write_durable_file(io, into + "/" + std::string(tensor_index_file), index)).get(),
           "write_durable_file");
      take(runtime.spawn(detail::write_durable_file(io, into + "/" + std::string(checkpoint_metadata_file), header_text))
               .get(),
           "write_durable_file");
    };
    const std::string groups = scope.param_groups.dump();
    // The least of a few merges: the work is the same each time, and a shared machine's
    // stalls (seconds, some runs) only add to it.
    std::vector<double> merges;
    detail::CommitPlan planned;
    for (int k = 0; k < options.merges; ++k) {
      planned = {};
      begin_stage();
      start = Clock::now();
      planned = take(detail::plan_commit(texts, options.ranks, groups, nullptr), "plan_commit");
      merges.push_back(seconds_since(start));
      const std::string label = "merge " + std::to_string(k + 1) + "/" + std::to_string(options.merges);
      print_stage(label.c_str(), merges.back(),
                  "detail::plan_commit: every plan decoded, runs extended, tilings checked, encoded");
    }
    const double merge_s = bench::spread_of(merges).min;
    begin_stage();
    start = Clock::now();
    write(planned.index, dir);
    const double write_s = seconds_since(start);
    const double index_bytes = static_cast<double>(planned.index.size());
    std::snprintf(line, sizeof line, "%.1f MiB of tensor index, %zu bytes of header; written and fsynced",
                  in_mib(index_bytes), header_text.size());
    print_stage("index write", write_s, line);
    plan_s = merge_s + write_s;

    // The next save of the same layout (an AsyncCheckpointer's): every rank sends its
    // cached plan, rank 0 rewrites the checksums of the last index and writes it.
    detail::PlanCache cache;
    detail::remember(cache, planned);
    planned = {};
    std::uint64_t cached_bytes = 0;
    for (std::string& text : texts) {
      text = detail::cached_plan(text);
      cached_bytes += text.size() + sizeof(std::uint64_t);
    }
    const std::string resave = dir + "/resave";  // a save writes a new directory
    std::filesystem::create_directory(resave);
    begin_stage();
    start = Clock::now();
    detail::CommitPlan reused = take(detail::plan_commit(texts, options.ranks, groups, &cache), "plan_commit (cached)");
    write(reused.index, resave);
    plan_cached_s = seconds_since(start);
    std::snprintf(line, sizeof line, "%.2f MiB to rank 0 (%.0f bytes a rank); the index's checksums rewritten, "
                  "written and fsynced with the header", in_mib(static_cast<double>(cached_bytes)),
                  static_cast<double>(cached_bytes) / options.ranks);
    print_stage("cached re-save", plan_cached_s, line);
    texts = {};

    // 4. Every load rank's plan, within the budget.
    begin_stage();
    const detail::ReadPlanLimits limits{.block_size = default_checksum_block, .max_read = (4u << 20) - 2 * 4096};
    std::vector<double> planning, opening;
    double model_s = 0, most_read = 0;
    start = Clock::now();
    std::size_t reads = 0, rank_indexes = 0;
    // One rank's plan: open_for, find_read_needs, plan_reads. @returns its seconds and
    // open_for's.
    auto plan_load = [&](std::span<LocalChunk> targets, bool count) {
      const auto planned_from = Clock::now();
      CountingStorage counting(*storage);
      const CheckpointIo counted{&runtime, &counting, staging.get()};
      auto reader = take(runtime.spawn(CheckpointReader::open_for(counted, dir, targets)).get(), "open_for");
      const double open_s = seconds_since(planned_from);
      auto needs = take(detail::find_read_needs(reader->metadata(), targets, true, dir), "find_read_needs");
      const std::size_t planned_reads = detail::plan_reads(needs.needs, limits).size();
      const double plan_s = seconds_since(planned_from);
      if (count) {
        reads += planned_reads;
        rank_indexes += counting.rank_indexes;
        most_read = std::max(most_read, static_cast<double>(counting.bytes_read));
      }
      return std::pair(plan_s, open_s);
    };
    // The first pass over the load ranks, within the budget, keeps each one's model.
    struct LoadRank {
      std::unique_ptr<Model> model;
      LocalChunks targets;
    };
    std::vector<LoadRank> sampled;
    for (int rank : spread_order(load_ranks)) {
      if (!planning.empty() && seconds_since(start) > options.load_budget_s) break;
      const auto rank_start = Clock::now();
      auto model = take(runtime.spawn(build_model(load_spec, rank)).get(), "Model::build");
      LocalChunks targets = take(LocalChunks::of(*model), "LocalChunks::of");
      model_s += seconds_since(rank_start);
      const auto [plan_s, open_s] = plan_load(targets.chunks(), true);
      planning.push_back(plan_s);
      opening.push_back(open_s);
      sampled.push_back({std::move(model), std::move(targets)});
    }
    // Then --load-repeats - 1 passes more over the same ranks, each keeping its least
    // time: the same work each time, seconds apart, so that a stall of the shared machine
    // (they last up to a few hundred ms here) is not counted as a rank's cost.
    for (int pass = 1; pass < options.load_repeats; ++pass) {
      for (std::size_t i = 0; i < sampled.size(); ++i) {
        const auto [plan_s, open_s] = plan_load(sampled[i].targets.chunks(), false);
        planning[i] = std::min(planning[i], plan_s);
        opening[i] = std::min(opening[i], open_s);
      }
    }
    const auto load = bench::spread_of(planning);
    const auto opened = bench::spread_of(opening);
    load_plan_ms = load.max * 1e3;
    metadata_bytes = most_read;
    std::snprintf(line, sizeof line,
                  "%zu of %d ranks%s; a rank (open_for + find_read_needs + plan_reads): median %.1f ms, max %.1f ms "
                  "(open_for median %.1f ms); %.1f rank indexes and %.1f reads a rank, at most %.1f MiB read; "
                  "Model::build + LocalChunks::of %.1f ms a rank",
                  planning.size(), load_ranks,
                  planning.size() < static_cast<std::size_t>(load_ranks) ? " (budget)" : "", load.median * 1e3,
                  load.max * 1e3, opened.median * 1e3, static_cast<double>(rank_indexes) / planning.size(),
                  static_cast<double>(reads) / planning.size(), in_mib(most_read), model_s / planning.size() * 1e3);
    print_stage("load plans", seconds_since(start), line);
  } else {
    std::printf("merge, index write, load plans: skipped: %s\n", skipped.c_str());
  }
  std::filesystem::remove_all(dir);
  return finish(params, plan_s, plan_cached_s, metadata_bytes, load_plan_ms, to_rank0, chunks);
}

}  // namespace
}  // namespace corockpt

int main(int argc, char** argv) {
  corockpt::bench::set_program_name("corockpt_bench_plan");
  corockpt::Options options;
  CLI::App app{
      "Save and load planning at N simulated ranks, without data: every rank's plan and index as the save builds "
      "them, rank 0's merge and index and header writes, and every load rank's read plan from the indexes. --ranks scales the "
      "spec: each mesh keeps its inner dims (EP 64, say) and its leading (data-parallel / FSDP) dim becomes N divided "
      "by their product; N must divide by it."};
  app.add_option("--ranks", options.ranks, "simulated ranks of the save")
      ->default_val(options.ranks)
      ->check(CLI::PositiveNumber);
  app.add_option("--spec", options.spec, "the model spec (model_spec.hpp), scaled to --ranks")
      ->default_val(options.spec);
  app.add_option("--load-ranks", options.load_ranks,
                 "simulated ranks of the load (default: --ranks / 2, or --ranks where the spec does not scale to that)")
      ->check(CLI::PositiveNumber);
  app.add_option("--dir", options.dir, "where the indexes and the header are written (a scratch directory, removed)")
      ->default_val(options.dir);
  app.add_option("--max-memory-gib", options.max_memory_gib,
                 "stages that would take the process past this are skipped, saying why")
      ->default_val(options.max_memory_gib);
  app.add_option("--load-budget-s", options.load_budget_s,
                 "load plans are built for ranks spread over the load world until this many seconds have passed")
      ->default_val(options.load_budget_s);
  app.add_option("--merges", options.merges, "rank 0's merge is run this many times; plan_s counts the least")
      ->check(CLI::PositiveNumber)
      ->default_val(options.merges);
  app.add_option("--load-repeats", options.load_repeats,
                 "load ranks are planned in this many passes; each one's time is its least")
      ->check(CLI::PositiveNumber)
      ->default_val(options.load_repeats);
  app.add_option("--sample-ranks", options.sample_ranks,
                 "plan only this many of the ranks, spread over the world, and scale their bytes and chunks to it "
                 "(the later stages are skipped)")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  return corockpt::run(options);
}
