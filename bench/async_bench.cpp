// corockpt_bench_async: what an asynchronous checkpoint costs a training loop. 8
// in-process ranks (mesh 2x4), one thread per rank, each with an AsyncCheckpointer, train
// a synthetic model; per checkpoint we measure the stall and the slowdown of the steps
// that run while the save persists, against a plain memcpy of the same state and a
// synchronous save_checkpoint of it.
//
// The model: example::training_spec_json (the seed's shape: an embedding, --layers layers
// (default 2) of a dense `flat` unit on all 8 ranks and an expert unit of 8 experts on the
// dp x ep mesh), float32, Adam; `hidden` is chosen so that params + exp_avg + exp_avg_sq
// total --size-gib over all ranks. More layers: more, smaller units, so the per-unit
// fences let the optimizer start sooner.
//
// Staging: by default each rank's checkpointer holds a snapshot the size of its state;
// with --staging-fraction F its staging budget is F x its state, and the save streams
// through that (AsyncCheckpointerOptions::staging_budget). `staging/state` is the
// checkpointers' staging memory over the state (the shared pool of 16 x 4 MiB, which the
// sync save writes through and the async saves do not use, is printed apart).
//
// A step, on every rank's thread: forward/backward (a sleep of --forward-ms, standing in
// for GPU compute that the snapshot copy can overlap), then the "optimizer step" unit by
// unit in the checkpointer's step_order, each unit behind its own fence
// (wait_snapshot(unit) of the save requested at the end of the previous step, if any):
// a real pass over the live state, adding 1 to every float32 element of the
// params (--pass params, the default) or of the params and both Adam moments (--pass
// state). SyntheticTrainer::optimizer_step would take many seconds per GiB on 2 cores,
// so its memory traffic is what is kept. Every step ends in a barrier of all ranks (a
// stand-in for the gradient all-reduce), so a step's time is the slowest rank's.
//
// Each round alternates three things (A B C, A B C, ...), after one warm-up round that
// is not counted (it faults in the snapshot memory and warms the storage):
// (A) async: 3 quiet steps (nothing in flight), then async_save at the end of the last;
//     the next step runs its forward while the snapshot copies, then steps each unit
//     once its fence opens (the stall is the sum of those waits; step_with_snapshot/quiet
//     compares that whole step with a quiet one);
//     then steps go on until the save has committed on every rank. Figures: the stall
//     (the longest time a rank was blocked in wait_snapshot: the step would have taken
//     its usual time without it), the quiet step (median of the 3) and the steps during
//     persist (median of those that ran entirely while the save was persisting);
// (B) memcpy: every rank thread copies the chunks its snapshot copies (this rank's
//     written chunks) into its own preallocated, pre-faulted buffer, all ranks at once;
//     timed from a barrier before to the last rank's end;
// (C) sync save: save_checkpoint on all 8 ranks, from the call to the commit on every
//     rank.
// Checkpoint directories are removed after each phase, untimed. Where the steps' time
// goes: the process's CPU (getrusage, every thread) at each step's end, so the CPU a
// persist takes from training shows as the step's CPU during persist minus a quiet one's;
// and the sync save's CPU per GiB. Summary: medians of the per-round ratios with their
// spread (min..max); the last line is `stall/sync_save`.
//
// `--device cuda` (default --size-gib 8): the same figures with the state in GPU memory
// (Model::move_to; every rank on GPU `rank % count`), the checkpointer copying through the
// cuda device into pinned staging memory. Forward/backward is a kernel keeping every SM
// busy for --forward-ms on the rank's compute stream (which the snapshot's copies
// overlap), the optimizer pass a kernel adding 1 on the same stream, each waited for so a
// step's time is the GPU's; the memcpy baseline is cudaMemcpyAsync of the same chunks
// into pinned memory; the sync save is save_checkpoint through SaveOptions::device (which
// pins its own snapshot memory per save). So the last line is the stall of an async save
// of that much device state beside the synchronous save's time. Without a GPU it says why
// and exits 77.

#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_support.hpp"
#include "corockpt/ckpt/async_checkpointer.hpp"
#include "corockpt/ckpt/checkpoint_directory.hpp"
#include "corockpt/ckpt/local_chunks.hpp"
#include "corockpt/ckpt/model.hpp"
#include "corockpt/ckpt/model_spec.hpp"
#include "corockpt/ckpt/save.hpp"
#include "examples/train/cuda_training.hpp"
#include "examples/train/synthetic_training.hpp"
#include "corockpt/plugins/comm/local/local_communicator.hpp"
#include "corockpt/plugins/storage/make_storage.hpp"
#include "corockpt/runtime/buffer_pool.hpp"
#include "corockpt/runtime/runtime.hpp"

namespace corockpt {
namespace {

using bench::Clock;
using bench::die;
using bench::gib;
using bench::mib;
using bench::take;

constexpr int world_size = 8;
constexpr int expert_groups = 4;  // mesh 2 x 4
constexpr int num_experts = 8;
constexpr std::size_t staging_buffer_bytes = 4 * mib;
constexpr std::size_t staging_buffer_count = 16;
constexpr int quiet_steps = 3;
constexpr int max_persist_steps = 1000;  // a save that never ends stops the bench here

struct Options {
  double size_gib = 4.0;
  std::size_t pairs = 5;
  int forward_ms = 400;
  std::string dir = "/tmp";  // the parent of a fresh corockpt-bench-async-<pid>
  std::string storage = "auto";
  std::string pass = "params";
  std::string device = "host";
  int layers = 2;
  double staging_fraction = 0;  // 0: a snapshot of the whole state
};

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// ---------------------------------------------------------------- the model

std::uint64_t state_bytes_of(std::int64_t h, int num_layers) {
  const std::int64_t params = h * h + num_layers * (h * h + h + num_experts * (2 * h * h + h));
  return static_cast<std::uint64_t>(params) * 4 * 3;  // float32: param, exp_avg, exp_avg_sq
}

/// The seed's shape with the largest hidden size whose state fits in `bytes`.
example::TrainingShape shape_for(std::uint64_t bytes, int num_layers) {
  example::TrainingShape shape{.world_size = world_size, .expert_groups = expert_groups, .hidden = 8,
                               .experts = num_experts, .layers = num_layers, .layout = "flat"};
  // state ~ 12 * (1 + L * (1 + 2E)) * h^2
  auto h = static_cast<std::int64_t>(
      std::sqrt(static_cast<double>(bytes) / (12.0 * (1 + num_layers * (1 + 2 * num_experts)))));
  while (h > 8 && state_bytes_of(h, num_layers) > bytes) --h;
  while (state_bytes_of(h + 1, num_layers) <= bytes) ++h;
  shape.hidden = std::max<std::int64_t>(h, 8);
  return shape;
}

Task<std::unique_ptr<Model>> build_rank(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> world) {
  auto model = co_await Model::build(spec, rank, std::move(world));
  if (!model) co_return fail(model.error().with_rank(rank));
  co_return std::move(*model);
}

/// One rank: its model, strand, checkpointer, the memory its optimizer pass updates,
/// the chunks a snapshot copies, and the memcpy baseline's destination.
struct Rank {
  explicit Rank(Runtime& runtime) : strand(runtime.make_strand()) {}
  std::unique_ptr<example::GpuRank> gpu;  // --device cuda; first: destroyed after its users
  std::unique_ptr<Model> model;
  Runtime::Strand strand;
  std::unique_ptr<AsyncCheckpointer> checkpointer;
  std::vector<std::pair<std::uint32_t, std::span<float>>> pass;  // (unit, values)
  std::vector<std::span<const std::byte>> copied;
  std::uint64_t copied_bytes = 0;  // with the snapshot's 64-byte alignment of each chunk
  std::byte* copy_buffer = nullptr;
  std::shared_ptr<BufferAllocator> copy_allocator;  // pinned memory with a GPU
};

constexpr std::uint64_t aligned64(std::uint64_t n) { return (n + 63) / 64 * 64; }

/// Lists what the pass updates and what a snapshot copies (Snapshot's own rule: the
/// chunks this rank writes, non-empty).
void list_memory(Rank& rank, bool whole_state) {
  auto chunks = take(LocalChunks::of(*rank.model), "LocalChunks::of");
  for (const auto& chunk : chunks.chunks()) {
    if (chunk.writer && !chunk.box.empty()) {
      rank.copied.push_back(chunk.bytes);
      rank.copied_bytes += aligned64(chunk.bytes.size());
    }
    if (chunk.bytes.empty() || chunk.dtype != DType::float32 || chunk.name.ends_with(".step")) continue;
    if (!whole_state && chunk.name.starts_with("state.")) continue;
    // Model memory is a std::byte array: it implicitly holds float objects (P0593).
    rank.pass.emplace_back(chunk.unit,
                           std::span<float>(reinterpret_cast<float*>(chunk.bytes.data()), chunk.bytes.size() / sizeof(float)));
  }
}

/// Forward/backward's stand-in: a sleep, or a kernel on the rank's GPU waited for.
void forward_backward(Rank& rank, std::chrono::milliseconds forward) {
  if (!rank.gpu) {
    std::this_thread::sleep_for(forward);
    return;
  }
  take(rank.gpu->forward_backward(static_cast<double>(forward.count())), "the forward/backward kernel");
  take(rank.gpu->synchronize(), "forward/backward");
}

/// The optimizer step's stand-in: a read-modify-write of every element (on the GPU: a
/// kernel, waited for); with `unit`, of that unit's elements only.
void optimizer_pass(Rank& rank, std::int64_t step, std::optional<std::uint32_t> unit = std::nullopt) {
  if (rank.gpu) {
    for (auto [u, values] : rank.pass) {
      if (!unit || u == *unit) take(rank.gpu->add(values, 1.0f), "the optimizer pass");
    }
    take(rank.gpu->synchronize(), "the optimizer pass");
  } else {
    for (auto [u, values] : rank.pass) {
      if (unit && u != *unit) continue;
      for (float& v : values) v += 1.0f;
    }
  }
  rank.model->set_step(static_cast<double>(step));
}

void memcpy_state(Rank& rank) {
  std::uint64_t at = 0;
  for (auto bytes : rank.copied) {
    if (rank.gpu) {
      take(rank.gpu->copy_to_host({rank.copy_buffer + at, bytes.size()}, bytes), "the memcpy baseline");
    } else {
      std::memcpy(rank.copy_buffer + at, bytes.data(), bytes.size());
    }
    at += aligned64(bytes.size());
  }
  if (rank.gpu) take(rank.gpu->synchronize(), "the memcpy baseline");
}

// ---------------------------------------------------------------- files

void remove_tree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) die("removing " + path + ": " + ec.message());
}

// ---------------------------------------------------------------- steps and barriers

/// The end of every step on every rank: records when the last rank arrived and whether
/// some rank's save is still running (every rank reads the same answer after the barrier).
struct StepMarks {
  std::vector<Clock::time_point> at;  // [0] the start; then one per step
  std::vector<char> persisting_at;    // some save unfinished at that mark
  std::vector<double> cpu_at;         // the process's CPU seconds at that mark
  const std::vector<SaveHandle>* handles = nullptr;
  std::size_t handles_from = 0;  // the mark from which `handles` are all set
  bool persisting = false;

  void reset(std::size_t capacity) {
    at.clear();
    persisting_at.clear();
    cpu_at.clear();
    at.reserve(capacity);  // the completion below must not allocate (it is noexcept)
    persisting_at.reserve(capacity);
    cpu_at.reserve(capacity);
    persisting = false;
  }
};

struct OnStepEnd {
  StepMarks* marks;
  void operator()() noexcept {
    StepMarks& m = *marks;
    bool running = false;
    if (m.handles && m.at.size() >= m.handles_from) {
      for (const SaveHandle& h : *m.handles) running = running || !h.done();
    }
    m.persisting = running;
    if (m.at.size() < m.at.capacity()) {
      m.at.push_back(Clock::now());
      m.persisting_at.push_back(running ? 1 : 0);
      m.cpu_at.push_back(bench::cpu_seconds(RUSAGE_SELF));
    }
  }
};

using StepBarrier = std::barrier<OnStepEnd>;

template <class F>
void on_rank_threads(std::vector<Rank>& ranks, F work) {
  std::vector<std::thread> threads;
  for (std::size_t r = 0; r < ranks.size(); ++r) threads.emplace_back([&, r] { work(ranks[r], static_cast<int>(r)); });
  for (auto& t : threads) t.join();
}

// ---------------------------------------------------------------- the three phases

struct AsyncRun {
  double stall_s = 0;          // the longest time a rank was blocked in wait_snapshot
  double recorded_stall_s = 0;  // the same, as SaveTimes::stall_seconds says
  double snapshot_s = 0;        // SaveTimes, max over ranks
  double persist_s = 0;
  double quiet_step_s = 0;      // median of the quiet steps
  double fence_step_s = 0;
  double persist_step_s = 0;    // median of the steps wholly during persist (or partly, if none)
  double quiet_cpu_s = 0;       // the process's CPU per step: median of the quiet steps
  double persist_cpu_s = 0;     // and of the steps during persist
  int whole_steps = 0;          // steps wholly during persist
  int partial_steps = 0;        // steps that began during persist and ended after it
  std::uint64_t bytes = 0;      // data file bytes, all ranks
};

double median_of(std::vector<double> values) { return bench::spread_of(std::move(values)).median; }

AsyncRun async_run(std::vector<Rank>& ranks, std::int64_t& step, std::chrono::milliseconds forward) {
  StepMarks marks;
  marks.reset(quiet_steps + max_persist_steps + 4);
  std::vector<SaveHandle> handles(ranks.size());
  marks.handles = &handles;
  marks.handles_from = quiet_steps + 1;  // the fence step's end
  StepBarrier barrier(static_cast<std::ptrdiff_t>(ranks.size()), OnStepEnd{&marks});
  std::vector<double> blocked(ranks.size());
  const std::int64_t first = step;
  const std::int64_t save_step = first + quiet_steps;

  on_rank_threads(ranks, [&](Rank& rank, int r) {
    std::int64_t s = first;
    barrier.arrive_and_wait();
    for (int q = 0; q < quiet_steps; ++q) {
      forward_backward(rank, forward);
      optimizer_pass(rank, ++s);
      barrier.arrive_and_wait();
    }
    // The end of step `save_step`: the checkpoint of its state.
    nlohmann::json user = {{"step", save_step}};
    handles[r] = take(rank.checkpointer->async_save(save_step, std::move(user)), "async_save");
    forward_backward(rank, forward);
    // The optimizer steps unit by unit, each behind its own fence.
    ++s;
    for (std::uint32_t unit : rank.checkpointer->step_order()) {
      const auto fence = Clock::now();
      take(handles[r].wait_snapshot(unit), "the snapshot");
      blocked[r] += bench::seconds_since(fence);
      optimizer_pass(rank, s, unit);
    }
    barrier.arrive_and_wait();
    for (int n = 0; marks.persisting && n < max_persist_steps; ++n) {
      forward_backward(rank, forward);
      optimizer_pass(rank, ++s);
      barrier.arrive_and_wait();
    }
  });

  if (marks.persisting) die("the async save did not finish within " + std::to_string(max_persist_steps) + " steps");
  AsyncRun run;
  for (std::size_t r = 0; r < ranks.size(); ++r) {
    const auto report = take(handles[r].wait(), "the async save");
    const SaveTimes t = handles[r].times();
    run.stall_s = std::max(run.stall_s, blocked[r]);
    run.recorded_stall_s = std::max(run.recorded_stall_s, t.stall_seconds);
    run.snapshot_s = std::max(run.snapshot_s, t.snapshot_seconds);
    run.persist_s = std::max(run.persist_s, t.persist_seconds);
    run.bytes = report.total_bytes;
  }
  const auto& at = marks.at;
  const auto& cpu = marks.cpu_at;
  std::vector<double> quiet, whole, partial, quiet_cpu, whole_cpu, partial_cpu;
  for (int q = 1; q <= quiet_steps; ++q) {
    quiet.push_back(seconds_between(at[q - 1], at[q]));
    quiet_cpu.push_back(cpu[q] - cpu[q - 1]);
  }
  run.fence_step_s = seconds_between(at[quiet_steps], at[quiet_steps + 1]);
  for (std::size_t k = quiet_steps + 2; k < at.size(); ++k) {
    (marks.persisting_at[k] ? whole : partial).push_back(seconds_between(at[k - 1], at[k]));
    (marks.persisting_at[k] ? whole_cpu : partial_cpu).push_back(cpu[k] - cpu[k - 1]);
  }
  run.quiet_step_s = median_of(quiet);
  run.quiet_cpu_s = median_of(quiet_cpu);
  run.persist_cpu_s = median_of(whole.empty() ? partial_cpu : whole_cpu);
  run.whole_steps = static_cast<int>(whole.size());
  run.partial_steps = static_cast<int>(partial.size());
  run.persist_step_s = median_of(whole.empty() ? partial : whole);
  step = first + static_cast<std::int64_t>(at.size()) - 1;
  remove_tree(ranks.front().checkpointer->root() + "/" + step_checkpoint_name(save_step));
  return run;
}

double memcpy_run(std::vector<Rank>& ranks) {
  StepMarks marks;
  marks.reset(2);
  StepBarrier barrier(static_cast<std::ptrdiff_t>(ranks.size()), OnStepEnd{&marks});
  on_rank_threads(ranks, [&](Rank& rank, int) {
    barrier.arrive_and_wait();
    memcpy_state(rank);
    barrier.arrive_and_wait();
  });
  return seconds_between(marks.at[0], marks.at[1]);
}

struct SyncRun {
  double seconds = 0;
  double cpu_seconds = 0;  // the process's, while only the save runs
};

SyncRun sync_save_run(Runtime& runtime, std::vector<Rank>& ranks, const CheckpointIo& io, const std::string& dir) {
  const double cpu_start = bench::cpu_seconds(RUSAGE_SELF);
  const auto start = Clock::now();
  std::vector<TaskHandle<SaveReport>> handles;
  for (auto& rank : ranks) {
    SaveOptions options;  // checksums on (the default blocks), as the async save
    if (rank.gpu) options.device = rank.gpu->device();
    handles.push_back(runtime.spawn(rank.strand, save_checkpoint(*rank.model, io, dir, std::move(options))));
  }
  for (auto& handle : handles) take(handle.get(), "save_checkpoint");
  const SyncRun run{bench::seconds_since(start), bench::cpu_seconds(RUSAGE_SELF) - cpu_start};
  remove_tree(dir);
  return run;
}

// ---------------------------------------------------------------- the summary

using bench::spread_over;

struct Round {
  AsyncRun async;
  double memcpy_s = 0;
  double sync_s = 0;
  double sync_cpu_s = 0;
};

void print_round(const char* label, std::size_t i, const Round& r, std::uint64_t state) {
  const AsyncRun& a = r.async;
  std::printf("%s %zu  async: stall %7.1f ms (recorded %7.1f; fence step %+7.1f ms over quiet), snapshot %7.1f ms, "
              "persist %6.2f s; step quiet %6.1f ms, during persist %6.1f ms (%d whole, %d partial); CPU per step "
              "quiet %5.3f s, during persist %5.3f s\n",
              label, i, a.stall_s * 1e3, a.recorded_stall_s * 1e3, (a.fence_step_s - a.quiet_step_s) * 1e3,
              a.snapshot_s * 1e3, a.persist_s, a.quiet_step_s * 1e3, a.persist_step_s * 1e3, a.whole_steps,
              a.partial_steps, a.quiet_cpu_s, a.persist_cpu_s);
  if (r.memcpy_s > 0) {
    const double b = static_cast<double>(state);
    std::printf("%*s  memcpy: %7.1f ms (%5.2f GB/s); sync save: %6.2f s (%5.2f GB/s, %5.3f CPU s/GiB); async persist "
                "%5.2f GB/s\n",
                static_cast<int>(std::strlen(label)) + 2, "", r.memcpy_s * 1e3, b / 1e9 / r.memcpy_s, r.sync_s,
                static_cast<double>(a.bytes) / 1e9 / r.sync_s, r.sync_cpu_s / (static_cast<double>(a.bytes) / gib),
                static_cast<double>(a.bytes) / 1e9 / a.persist_s);
  }
  std::fflush(stdout);
}

const char* verdict(bool met) { return met ? "met" : "NOT met"; }

// ---------------------------------------------------------------- the run

int run(const Options& options) {
  const bool on_gpu = options.device == "cuda";
  if (on_gpu) {
    if (auto gpu = example::gpu_for_rank(0); !gpu) {
      std::printf("corockpt_bench_async: --device cuda: no usable GPU: %s\n", gpu.error().to_string().c_str());
      return 77;
    }
  }
  const auto kind = take(parse_storage_kind(options.storage), "--storage");
  const bool whole_state = options.pass == "state";
  const std::string dir = bench::make_scratch_dir(options.dir, "corockpt-bench-async");

  // Disk: one checkpoint at a time exists, but keep 3x the state free. Memory: the
  // state, its snapshot and the memcpy baseline's copy of it, plus 1 GiB.
  const auto requested = static_cast<std::uint64_t>(std::llround(options.size_gib * static_cast<double>(gib)));
  std::uint64_t size = bench::fit_to_free_space(requested, dir, 3);
  const std::uint64_t memory = bench::memory_available();
  if (memory != 0 && 3 * size + gib > memory) {
    size = memory > gib ? (memory - gib) / 3 : 0;
    std::printf("memory: %.2f GiB available, less than 3x the state + 1 GiB: scaling down to %.2f GiB\n",
                static_cast<double>(memory) / gib, static_cast<double>(size) / gib);
  }
  if (size < 64 * mib) die("too little room for a meaningful run (" + std::to_string(size) + " bytes)");
  const example::TrainingShape shape = shape_for(size, options.layers);
  const ModelSpec spec = take(parse_model_spec(example::training_spec_json(shape)), "the model spec");

  Runtime runtime;
  auto storage = take(make_storage(runtime, kind), "make_storage");
  auto staging = take(BufferPool::create({.buffer_bytes = staging_buffer_bytes, .buffer_count = staging_buffer_count},
                                         make_host_allocator()),
                      "BufferPool::create");
  const bool registered = storage->register_buffers(staging->regions());
  const CheckpointIo io{&runtime, storage.get(), staging.get()};

  // The ranks' GPUs first: the header names them.
  std::vector<Rank> ranks;
  ranks.reserve(world_size);
  for (int r = 0; r < world_size; ++r) ranks.emplace_back(runtime);
  if (on_gpu) {
    for (int r = 0; r < world_size; ++r) {
      const int ordinal = take(example::gpu_for_rank(r), "the rank's GPU");
      ranks[r].gpu = take(example::make_gpu_rank(runtime, ordinal), "make_gpu_rank");
    }
  }
  std::printf("corockpt_bench_async: %d ranks (mesh %dx%d), hidden %lld, %d experts, %d layers, flat, float32, Adam; "
              "%.3f GiB of %s state requested; %zu pairs; forward/backward %d ms (%s); optimizer pass over the %s; "
              "dir %s\n",
              world_size, world_size / expert_groups, expert_groups, static_cast<long long>(shape.hidden), num_experts,
              options.layers, static_cast<double>(state_bytes_of(shape.hidden, options.layers)) / gib, on_gpu ? "device" : "host",
              options.pairs, options.forward_ms, on_gpu ? "a kernel on every SM" : "a sleep",
              whole_state ? "params and Adam moments" : "params", dir.c_str());
  if (on_gpu) std::printf("device: cuda, rank 0 on %s\n", ranks[0].gpu->description().c_str());
  std::printf("engines: storage %s, staging pool %zu x %zu MiB (registered: %s), %zu worker threads\n",
              std::string(storage->name()).c_str(), staging_buffer_count, staging_buffer_bytes / mib,
              registered ? "yes" : "no", runtime.worker_count());
  std::fflush(stdout);

  // ---- setup, untimed
  const auto setup = Clock::now();
  auto world = take(make_local_world(runtime, world_size), "make_local_world");
  {
    std::vector<TaskHandle<std::unique_ptr<Model>>> built;
    for (int r = 0; r < world_size; ++r) built.push_back(runtime.spawn(ranks[r].strand, build_rank(spec, r, world[r])));
    for (int r = 0; r < world_size; ++r) ranks[r].model = take(built[r].get(), "Model::build");
  }
  auto memory_allocator = make_host_allocator();
  on_rank_threads(ranks, [&](Rank& rank, int) {
    rank.model->allocate();
    if (rank.gpu) {
      take(runtime.spawn(rank.strand, rank.model->move_to(rank.gpu->device())).get(), "Model::move_to");
    }
    list_memory(rank, whole_state);  // after the move: the device's addresses
    rank.copy_allocator = rank.gpu ? rank.gpu->device()->staging_allocator() : memory_allocator;
    rank.copy_buffer = take(rank.copy_allocator->allocate(rank.copied_bytes, 4096), "the memcpy buffer");
    std::memset(rank.copy_buffer, 0, rank.copied_bytes);  // fault it in now
  });
  const std::string async_root = dir + "/async";
  for (auto& rank : ranks) {
    AsyncCheckpointerOptions checkpointer_options{.root = async_root, .keep_last = 0};
    if (options.staging_fraction > 0) {
      checkpointer_options.staging_budget = std::max<std::uint64_t>(
          1, static_cast<std::uint64_t>(options.staging_fraction * static_cast<double>(rank.copied_bytes)));
    }
    if (rank.gpu) checkpointer_options.device = rank.gpu->device();
    rank.checkpointer = take(AsyncCheckpointer::create(*rank.model, io, rank.strand, checkpointer_options),
                             "AsyncCheckpointer::create");
  }
  std::uint64_t state = 0, snapshot_staging = 0;
  for (auto& rank : ranks) {
    const CheckpointerStats stats = rank.checkpointer->stats();
    state += stats.state_bytes;
    snapshot_staging += stats.staging_bytes;
  }
  const double staging_ratio = static_cast<double>(snapshot_staging) / static_cast<double>(state);
  std::printf("setup: %.3f GiB of state over %d ranks, checkpointers' staging %.3f GiB (%s) + the sync save's pool "
              "%.0f MiB, in %.1f s\n",
              static_cast<double>(state) / gib, world_size, static_cast<double>(snapshot_staging) / gib,
              options.staging_fraction > 0 ? "a budget per rank" : "a snapshot per rank",
              static_cast<double>(staging->total_bytes()) / mib, bench::seconds_since(setup));
  std::fflush(stdout);

  // ---- the rounds
  const std::chrono::milliseconds forward(options.forward_ms);
  std::int64_t step = 0;
  Round warm;
  warm.async = async_run(ranks, step, forward);
  print_round("warm-up", 0, warm, state);
  std::vector<Round> rounds;
  for (std::size_t i = 1; i <= options.pairs; ++i) {
    Round round;
    round.async = async_run(ranks, step, forward);
    round.memcpy_s = memcpy_run(ranks);
    const SyncRun sync = sync_save_run(runtime, ranks, io, dir + "/sync-" + std::to_string(i));
    round.sync_s = sync.seconds;
    round.sync_cpu_s = sync.cpu_seconds;
    print_round("round", i, round, state);
    rounds.push_back(round);
  }

  for (auto& rank : ranks) {
    if (auto stopped = rank.checkpointer->stop(std::chrono::seconds(60)); !stopped) die(stopped.error().to_string());
  }
  int committed = 0, failed = 0, waited = 0;
  for (auto& rank : ranks) {
    const CheckpointerStats stats = rank.checkpointer->stats();
    committed = std::max(committed, stats.committed);
    failed = std::max(failed, stats.failed);
    waited = std::max(waited, stats.waited);
  }

  // ---- the summary
  const auto stall_memcpy = spread_over(rounds, [](const Round& r) { return r.async.stall_s / r.memcpy_s; });
  const auto stall_sync = spread_over(rounds, [](const Round& r) { return r.async.stall_s / r.sync_s; });
  const auto steps = spread_over(rounds, [](const Round& r) { return r.async.persist_step_s / r.async.quiet_step_s; });
  // The whole step that holds the fences (forward, fences, optimizer) against a quiet one.
  const auto fenced = spread_over(rounds, [](const Round& r) { return r.async.fence_step_s / r.async.quiet_step_s; });
  const auto stall = spread_over(rounds, [](const Round& r) { return r.async.stall_s * 1e3; });
  const auto copy = spread_over(rounds, [](const Round& r) { return r.memcpy_s * 1e3; });
  const auto sync = spread_over(rounds, [](const Round& r) { return r.sync_s; });
  const auto persist = spread_over(rounds, [](const Round& r) { return r.async.persist_s; });
  const auto quiet = spread_over(rounds, [](const Round& r) { return r.async.quiet_step_s * 1e3; });
  const auto during = spread_over(rounds, [](const Round& r) { return r.async.persist_step_s * 1e3; });
  const auto quiet_cpu = spread_over(rounds, [](const Round& r) { return r.async.quiet_cpu_s; });
  const auto during_cpu = spread_over(rounds, [](const Round& r) { return r.async.persist_cpu_s; });
  const auto sync_cpu = spread_over(rounds, [](const Round& r) {
    return r.sync_cpu_s / (static_cast<double>(r.async.bytes) / gib);
  });
  std::printf("saves: %d committed, %d failed, %d waited for the previous one (per rank)\n", committed, failed, waited);
  std::printf("median stall %.1f ms (min %.1f, max %.1f); memcpy %.1f ms (min %.1f, max %.1f); sync save %.2f s "
              "(min %.2f, max %.2f); async persist %.2f s (min %.2f, max %.2f)\n",
              stall.median, stall.min, stall.max, copy.median, copy.min, copy.max, sync.median, sync.min, sync.max,
              persist.median, persist.min, persist.max);
  std::printf("median step quiet %.1f ms (min %.1f, max %.1f), during persist %.1f ms (min %.1f, max %.1f)\n",
              quiet.median, quiet.min, quiet.max, during.median, during.min, during.max);
  std::printf("median CPU per step (all threads): quiet %.3f s, during persist %.3f s; sync save %.3f CPU s/GiB "
              "(min %.3f, max %.3f)\n",
              quiet_cpu.median, during_cpu.median, sync_cpu.median, sync_cpu.min, sync_cpu.max);
  std::printf("median stall/memcpy %.2f (min %.2f, max %.2f)\n", stall_memcpy.median, stall_memcpy.min, stall_memcpy.max);
  std::printf("median step_during_persist/quiet %.2f (min %.2f, max %.2f)\n", steps.median, steps.min, steps.max);
  std::printf("median stall/sync_save %.3f (min %.3f, max %.3f)\n", stall_sync.median, stall_sync.min, stall_sync.max);
  if (options.staging_fraction > 0) {
    std::printf("targets (budget %.2f x state): stall/memcpy <= 1.0 %s; staging/state <= %.2f %s\n",
                options.staging_fraction, verdict(stall_memcpy.median <= 1.0), options.staging_fraction + 0.02,
                verdict(staging_ratio <= options.staging_fraction + 0.02));
  } else {
    std::printf("targets: stall/memcpy <= 0.25 %s; step_with_snapshot/quiet <= 1.15 %s; step during persist <= 1.15x "
                "quiet %s; staging/state <= 1.05 %s\n",
                verdict(stall_memcpy.median <= 0.25), verdict(fenced.median <= 1.15), verdict(steps.median <= 1.15),
                verdict(staging_ratio <= 1.05));
  }
  std::printf("stall/memcpy = %.2f\n", stall_memcpy.median);
  std::printf("step_with_snapshot/quiet = %.2f\n", fenced.median);
  std::printf("step_during_persist/quiet = %.2f\n", steps.median);
  std::printf("staging/state = %.2f\n", staging_ratio);
  std::printf("stall/sync_save = %.3f\n", stall_sync.median);
  std::fflush(stdout);

  for (auto& rank : ranks) rank.copy_allocator->deallocate(rank.copy_buffer, rank.copied_bytes);
  ranks.clear();  // checkpointers and models before the engines
  remove_tree(dir);
  return 0;
}

void add_options(CLI::App& app, Options& options) {
  app.add_option("--size-gib", options.size_gib,
                 "checkpointed state over all ranks: params + Adam's 2 moments (scaled down to free disk and memory)")
      ->check(CLI::Range(0.01, 1e4));
  app.add_option("--pairs", options.pairs, "measured rounds (async, memcpy, sync save), after one warm-up")
      ->check(CLI::Range(1, 1000));
  app.add_option("--forward-ms", options.forward_ms, "forward/backward of a step: a sleep standing in for GPU compute (a GPU kernel with --device cuda)")
      ->check(CLI::Range(0, 60000));
  app.add_option("--dir", options.dir, "parent of the bench's fresh directory (default /tmp)");
  app.add_option("--storage", options.storage, "auto, uring or posix")->check(CLI::IsMember({"auto", "uring", "posix"}));
  app.add_option("--pass", options.pass, "what the optimizer step's stand-in updates: params or state")
      ->check(CLI::IsMember({"params", "state"}));
  app.add_option("--layers", options.layers, "layers of the model (a dense unit and an expert unit each)")
      ->check(CLI::Range(1, 256));
  app.add_option("--staging-fraction", options.staging_fraction,
                 "each rank's staging budget as a fraction of its state (0: a snapshot of the whole state)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--device", options.device, "host, or cuda: the state in GPU memory (default --size-gib 8)")
      ->check(CLI::IsMember({"host", "cuda"}));
}

}  // namespace
}  // namespace corockpt

int main(int argc, char** argv) {
  using namespace corockpt;
  CLI::App app{"The cost of an asynchronous checkpoint to a training loop: stall and steps during persist"};
  Options options;
  add_options(app, options);
  CLI11_PARSE(app, argc, argv);
  if (options.device == "cuda" && app.count("--size-gib") == 0) options.size_gib = 8.0;
  bench::set_program_name("corockpt_bench_async");
  return run(options);
}
