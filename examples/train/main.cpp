// corockpt_train: an asynchronous-checkpointing training loop — the main example.
//
// A deterministic synthetic training of the seed model's shape (see
// synthetic_training.hpp) on 8 in-process ranks by default (`--backend mpi` under
// mpirun), checkpointing every K steps with AsyncCheckpointer: the step after a save
// request runs its forward/backward while the snapshot is copied, waits for the snapshot
// only before its optimizer step (the stall), and the gathers-free persist (writes,
// commit) runs behind the following steps. `--resume DIR` continues from the newest
// checkpoint in DIR, on any world size and mesh, and then checks that the result is
// bit-identical to an uninterrupted run. SIGTERM stops taking saves, finishes or
// abandons the one in flight within a deadline and exits with the last committed
// checkpoint intact.
//
// `--device cuda` trains on GPUs (cuda_training.hpp): each rank's params and Adam
// moments lie in device memory, its steps are kernels on its compute stream (a
// forward/backward stand-in of --forward-ms, the gradients, Adam — bit-identical to the
// host's arithmetic, so checkpoints move freely between host and GPU runs), and its
// snapshots copy through the cuda device into pinned staging memory while the next
// step's forward/backward runs.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include <CLI/CLI.hpp>

#include "corockpt/ckpt/async_checkpointer.hpp"
#include "corockpt/ckpt/checkpoint_directory.hpp"
#include "corockpt/ckpt/load.hpp"
#include "corockpt/ckpt/resource_bounds.hpp"
#include "corockpt/plugins/comm/local/local_communicator.hpp"
#include "corockpt/plugins/comm/mpi/mpi_communicator.hpp"
#include "corockpt/plugins/storage/make_storage.hpp"
#include "examples/train/cuda_training.hpp"
#include "examples/train/synthetic_training.hpp"
#include "fixtures/known_values.hpp"

using namespace corockpt;
using Clock = std::chrono::steady_clock;

namespace {

std::atomic<bool> stop_requested{false};
extern "C" void on_sigterm(int) { stop_requested.store(true); }

struct Args {
  example::TrainingShape shape;
  int steps = 20;
  int every = 5;
  std::string dir = "corockpt-train-checkpoints";
  std::string resume;
  std::string backend = "local";
  std::string storage = "auto";
  std::string trace;
  std::string when_busy = "wait";
  std::uint64_t staging_budget = 0;
  int keep_last = 2;
  int deadline_ms = 30000;
  std::string device = "host";
  double forward_ms = 20;  // --device cuda: the forward/backward kernel's duration
};

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// What each rank reports back for the summary.
struct RankResult {
  std::uint64_t digest = 0;
  std::uint64_t reference_digest = 0;
  std::int64_t start_step = 0;
  std::int64_t end_step = 0;
  std::vector<SaveTimes> saves;
  CheckpointerStats stats;
  std::string error;
};

// Rank 0 prints; the others keep quiet.
std::mutex print_mutex;
template <class... A>
void say(int rank, const char* format, A... args) {
  if (rank != 0) return;
  std::lock_guard lock(print_mutex);
  std::printf(format, args...);
  std::fflush(stdout);
}

template <class T>
Result<T> run(Runtime& runtime, Runtime::Strand& strand, Task<T> task) {
  return runtime.spawn(strand, std::move(task)).get();
}

// Trains `model` from its current step to `to`, with no checkpoints (the reference).
void train_plain(Model& model, std::int64_t from, std::int64_t to) {
  example::SyntheticTrainer trainer(model);
  for (std::int64_t step = from + 1; step <= to; ++step) {
    trainer.backward(step);
    trainer.optimizer_step();
  }
}

// The same on the GPU, for a model in `gpu`'s memory.
Result<void> train_plain(Model& model, example::GpuRank& gpu, std::int64_t from, std::int64_t to) {
  auto trainer = example::make_cuda_trainer(model, gpu);
  if (!trainer) return fail(trainer.error());
  for (std::int64_t step = from + 1; step <= to; ++step) {
    if (auto ok = (*trainer)->backward(step); !ok) return ok;
    if (auto ok = (*trainer)->optimizer_step(); !ok) return ok;
  }
  return gpu.synchronize();
}

// A rank's steps on the host (SyntheticTrainer) or on its GPU (kernels).
class RankTrainer {
 public:
  static Result<RankTrainer> create(Model& model, example::GpuRank* gpu, double forward_ms) {
    RankTrainer trainer;
    trainer.gpu_ = gpu;
    trainer.forward_ms_ = forward_ms;
    if (!gpu) {
      trainer.host_.emplace(model);
      return trainer;
    }
    auto kernels = example::make_cuda_trainer(model, *gpu);
    if (!kernels) return fail(kernels.error());
    trainer.kernels_ = std::move(*kernels);
    return trainer;
  }

  // On the GPU it waits for its kernels (as reading the loss would): the stall then
  // counts only the time the GPU sits idle for the snapshot.
  Result<void> forward_backward(std::int64_t step) {
    if (host_) {
      host_->backward(step);
      return {};
    }
    if (auto ok = gpu_->forward_backward(forward_ms_); !ok) return ok;
    if (auto ok = kernels_->backward(step); !ok) return ok;
    return gpu_->synchronize();
  }

  // On the GPU: queued; async_save orders the snapshot's copies after it. With `unit`,
  // that unit's params only.
  Result<void> optimizer_step(std::optional<std::uint32_t> unit = std::nullopt) {
    if (host_) {
      host_->optimizer_step(unit);
      return {};
    }
    return kernels_->optimizer_step(unit);
  }

  Result<void> finish() { return gpu_ ? gpu_->synchronize() : Result<void>{}; }

 private:
  RankTrainer() = default;
  example::GpuRank* gpu_ = nullptr;
  double forward_ms_ = 0;
  std::optional<example::SyntheticTrainer> host_;
  std::unique_ptr<example::CudaTrainer> kernels_;
};

// The rank's digest, its state copied from the GPU first when it lies there.
Result<std::uint64_t> digest_of(Runtime& runtime, Runtime::Strand& strand, Model& model, example::GpuRank* gpu) {
  if (!gpu) return example::state_digest(model);
  return run(runtime, strand, example::state_digest(model, gpu->device()));
}

// One rank's whole run, on its own thread: a plain synchronous training loop.
RankResult run_rank(const Args& args, const ModelSpec& spec, int rank, int local_rank,
                    std::shared_ptr<Communicator> world, CheckpointIo io) {
  RankResult out;
  Runtime& runtime = *io.runtime;
  Runtime::Strand strand = runtime.make_strand();
  // Declared first: destroyed after the models and the checkpointer that use its device.
  std::unique_ptr<example::GpuRank> gpu;
  std::shared_ptr<Device> device;
  if (args.device == "cuda") {
    auto ordinal = example::gpu_for_rank(local_rank);
    if (!ordinal) return {.error = ordinal.error().to_string()};
    auto made = example::make_gpu_rank(runtime, *ordinal);
    if (!made) return {.error = made.error().with_rank(rank).to_string()};
    gpu = std::move(*made);
    device = gpu->device();
    say(rank, "device: cuda, rank 0 on %s; forward/backward a %.0f ms kernel per step\n", gpu->description().c_str(),
        args.forward_ms);
  }
  auto model = run(runtime, strand, Model::build(spec, rank, world));
  if (!model) return {.error = model.error().to_string()};
  // A model larger than the memory there is fails here, on every rank, before allocating.
  if (auto fits = run(runtime, strand, check_memory_before_allocating(**model)); !fits) {
    return {.error = fits.error().to_string()};
  }
  (*model)->allocate();
  fixtures::fill_known_values(**model);
  if (!args.trace.empty()) (*model)->trace_to(&runtime.tracer());
  if (device) {
    // Initial values are written on the host, then the state moves to the GPU for good.
    auto moved = run(runtime, strand, (*model)->move_to(device));
    if (!moved) return {.error = moved.error().to_string()};
  }

  if (!args.resume.empty()) {
    auto found = run(runtime, strand, latest_checkpoint(io, args.resume));
    if (!found) return {.error = found.error().to_string()};
    if (!*found) return {.error = "no complete checkpoint in " + args.resume};
    LoadOptions load_options;
    load_options.device = device;  // lands in device memory, through host copies
    auto loaded = run(runtime, strand, load_checkpoint(**model, io, (*found)->path, load_options));
    if (!loaded) return {.error = loaded.error().to_string()};
    out.start_step = loaded->user.value("step", std::int64_t{0});
    say(rank, "resumed from %s (step %lld, saved on %d ranks) on %d ranks\n", (*found)->path.c_str(),
        static_cast<long long>(out.start_step), loaded->saved_world_size, spec.world_size);
  }

  AsyncCheckpointerOptions options{.root = args.dir,
                                   .when_busy = args.when_busy == "skip" ? BusyPolicy::skip : BusyPolicy::wait,
                                   .staging_budget = args.staging_budget,
                                   .device = device,
                                   .keep_last = args.keep_last};
  auto checkpointer = AsyncCheckpointer::create(**model, io, strand, options);
  if (!checkpointer) return {.error = checkpointer.error().to_string()};
  auto trainer = RankTrainer::create(**model, gpu.get(), args.forward_ms);
  if (!trainer) return {.error = trainer.error().with_rank(rank).to_string()};
  Tracer& tracer = runtime.tracer();
  std::string failure;  // a GPU error ends the loop; the saves in flight still finish

  std::vector<SaveHandle> saves;
  std::size_t reported = 0;          // saves whose end has been printed
  std::optional<SaveHandle> pending;  // the save whose snapshot the next optimizer step waits for
  std::int64_t step = out.start_step;
  while (step < args.steps && !stop_requested.load()) {
    ++step;
    const auto start = Clock::now();
    {
      ScopedSpan span(tracer, "forward/backward", "step", rank);
      if (auto ok = trainer->forward_backward(step); !ok) {
        failure = ok.error().with_rank(rank).to_string();
        break;
      }
    }
    // The optimizer steps unit by unit, each behind its own fence: the snapshot copies
    // the next unit while this one steps.
    double stall_ms = 0;
    {
      ScopedSpan span(tracer, "optimizer step", "step", rank);
      for (std::uint32_t unit : (*checkpointer)->step_order()) {
        if (pending) {
          const auto fence = Clock::now();
          if (auto ok = pending->wait_snapshot(unit); !ok) {
            say(rank, "  snapshot failed: %s\n", ok.error().to_string().c_str());
          }
          stall_ms += ms_since(fence);
        }
        if (auto ok = trainer->optimizer_step(unit); !ok) {
          failure = ok.error().with_rank(rank).to_string();
          break;
        }
      }
      pending.reset();
      if (!failure.empty()) break;
    }
    std::string note;
    if (step % args.every == 0) {
      auto handle = (*checkpointer)->async_save(step, {{"step", step}});
      if (!handle) {
        note = "  checkpoint refused: " + handle.error().to_string();
      } else {
        if (handle->previous_failure()) note = "  (the previous save failed: " + handle->previous_failure()->message + ")";
        if (handle->skipped()) {
          note += "  checkpoint skipped (a save is running)";
        } else {
          char staged[64];
          std::snprintf(staged, sizeof staged, " (staging %.1f MB)", (*checkpointer)->stats().state_bytes / 1e6);
          note += "  checkpoint " + step_checkpoint_name(step) + " requested" + staged;
          pending = *handle;
          saves.push_back(*handle);
        }
      }
    }
    // Saves that finished since the last step.
    while (reported < saves.size() && saves[reported].done()) {
      const SaveHandle& done = saves[reported++];
      const SaveTimes t = done.times();
      auto outcome = done.wait();
      char line[160];
      if (outcome) {
        std::snprintf(line, sizeof line, "  [%s committed: %.1f MB written by this rank, persist %.0f ms]",
                      step_checkpoint_name(done.step()).c_str(), t.bytes / 1e6, t.persist_seconds * 1e3);
      } else {
        std::snprintf(line, sizeof line, "  [%s failed: %s]", step_checkpoint_name(done.step()).c_str(),
                      outcome.error().message.c_str());
      }
      note += line;
    }
    say(rank, "step %4lld  %8.2f ms  stall %7.3f ms%s\n", static_cast<long long>(step), ms_since(start), stall_ms,
        note.c_str());
  }
  out.end_step = step;
  if (stop_requested.load()) say(rank, "SIGTERM: no more saves; finishing the one in flight\n");
  auto stopped = (*checkpointer)->stop(std::chrono::milliseconds(args.deadline_ms));
  if (!stopped) say(rank, "last save: %s\n", stopped.error().to_string().c_str());
  for (auto& s : saves) {
    s.wait();
    out.saves.push_back(s.times());
    if (auto r = s.wait(); !r) say(rank, "save of step %lld failed: %s\n", static_cast<long long>(s.step()), r.error().to_string().c_str());
  }
  out.stats = (*checkpointer)->stats();
  if (!failure.empty()) return {.error = failure};
  if (auto ok = trainer->finish(); !ok) return {.error = ok.error().with_rank(rank).to_string()};
  auto digest = digest_of(runtime, strand, **model, gpu.get());
  if (!digest) return {.error = digest.error().to_string()};
  out.digest = *digest;

  if (!args.resume.empty() && !stop_requested.load()) {
    // The same training, uninterrupted, from the initial values, on the same device.
    auto reference = run(runtime, strand, Model::build(spec, rank, world));
    if (!reference) return {.error = reference.error().to_string()};
    (*reference)->allocate();
    fixtures::fill_known_values(**reference);
    if (gpu) {
      auto moved = run(runtime, strand, (*reference)->move_to(device));
      if (!moved) return {.error = moved.error().to_string()};
      if (auto ok = train_plain(**reference, *gpu, 0, out.end_step); !ok) return {.error = ok.error().to_string()};
    } else {
      train_plain(**reference, 0, out.end_step);
    }
    auto reference_digest = digest_of(runtime, strand, **reference, gpu.get());
    if (!reference_digest) return {.error = reference_digest.error().to_string()};
    out.reference_digest = *reference_digest;
  }
  return out;
}

void print_summary(const Args& args, const std::vector<RankResult>& ranks, std::uint64_t state_bytes) {
  const RankResult& r0 = ranks.front();
  std::printf("\nsummary: steps %lld..%lld, %.1f MB of checkpointed state%s\n", static_cast<long long>(r0.start_step + 1),
              static_cast<long long>(r0.end_step), state_bytes / 1e6,
              args.backend == "mpi" ? " on rank 0 (figures are rank 0's)" : "");
  for (std::size_t i = 0; i < r0.saves.size(); ++i) {
    double stall = 0, snapshot = 0, persist = 0;
    std::uint64_t bytes = 0;
    for (const auto& r : ranks) {
      if (i >= r.saves.size()) continue;
      stall = std::max(stall, r.saves[i].stall_seconds);
      snapshot = std::max(snapshot, r.saves[i].snapshot_seconds);
      persist = std::max(persist, r.saves[i].persist_seconds);
      bytes += r.saves[i].bytes;
    }
    std::printf("  checkpoint %zu: stall %.3f ms, snapshot %.3f ms, persist %.1f ms, %.1f MB written, %.2f GB/s\n", i + 1,
                stall * 1e3, snapshot * 1e3, persist * 1e3, bytes / 1e6, persist > 0 ? bytes / persist / 1e9 : 0.0);
  }
  std::uint64_t staging = 0;
  int committed = 0, failed = 0, skipped = 0, waited = 0;
  for (const auto& r : ranks) {
    staging += r.stats.staging_bytes;
    committed = std::max(committed, r.stats.committed);
    failed = std::max(failed, r.stats.failed);
    skipped = std::max(skipped, r.stats.skipped);
    waited = std::max(waited, r.stats.waited);
  }
  std::printf("  saves: %d committed, %d failed, %d skipped, %d waited for the previous one\n", committed, failed,
              skipped, waited);
  std::printf("  staging memory: %.1f MB (allocated once) for %.1f MB of checkpointed state\n", staging / 1e6,
              state_bytes / 1e6);
  (void)args;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  CLI::App app{"corockpt_train: a synthetic MoE training loop with asynchronous checkpoints"};
  app.add_option("--world", args.shape.world_size, "ranks (in this process with --backend local)");
  app.add_option("--ep", args.shape.expert_groups, "expert-parallel groups (the mesh is world/ep x ep)");
  app.add_option("--hidden", args.shape.hidden, "hidden size");
  app.add_option("--experts", args.shape.experts, "experts per MoE layer");
  app.add_option("--layers", args.shape.layers, "layers (each a dense unit and an expert unit)");
  app.add_option("--layout", args.shape.layout, "flat (FSDP1) or per_param (FSDP2)")->check(CLI::IsMember({"flat", "per_param"}));
  app.add_option("--steps", args.steps, "train until this step");
  app.add_option("--checkpoint-every", args.every, "checkpoint every K steps")->check(CLI::PositiveNumber);
  app.add_option("--dir", args.dir, "where checkpoints go (<dir>/step-<N>)");
  app.add_option("--resume", args.resume, "continue from the newest checkpoint in this directory");
  app.add_option("--keep-last", args.keep_last, "keep this many newest checkpoints (0: all)");
  app.add_option("--when-busy", args.when_busy, "a save requested while one runs: wait or skip")->check(CLI::IsMember({"wait", "skip"}));
  app.add_option("--staging-budget", args.staging_budget, "snapshot memory per rank in bytes (0: the state's size)");
  app.add_option("--backend", args.backend, "local or mpi")->check(CLI::IsMember({"local", "mpi"}));
  app.add_option("--storage", args.storage, "auto, uring or posix")->check(CLI::IsMember({"auto", "uring", "posix"}));
  app.add_option("--trace", args.trace, "write a Chrome trace (steps, copies, writes) to this file");
  app.add_option("--deadline-ms", args.deadline_ms, "how long a checkpoint collective or the last save may take");
  app.add_option("--device", args.device, "host, or cuda: the state in GPU memory, the steps as kernels")
      ->check(CLI::IsMember({"host", "cuda"}));
  app.add_option("--forward-ms", args.forward_ms, "with --device cuda: the forward/backward kernel's duration per step")
      ->check(CLI::Range(0.0, 60000.0));
  CLI11_PARSE(app, argc, argv);
  if (args.resume.empty() == false && app.count("--dir") == 0) args.dir = args.resume;

  std::signal(SIGTERM, on_sigterm);
  if (args.device == "cuda") {
    // Say so at once, before any rank starts, when there is no GPU to train on.
    if (auto gpu = example::gpu_for_rank(0); !gpu) {
      std::fprintf(stderr, "corockpt_train: --device cuda: %s\n", gpu.error().to_string().c_str());
      return 2;
    }
  }
  auto spec = parse_model_spec(example::training_spec_json(args.shape));
  if (!spec) {
    std::fprintf(stderr, "corockpt_train: %s\n", spec.error().to_string().c_str());
    return 2;
  }
  Runtime runtime;
  if (!args.trace.empty()) runtime.tracer().enable();
  auto kind = parse_storage_kind(args.storage);
  auto storage = kind ? make_storage(runtime, *kind) : Result<std::unique_ptr<Storage>>(fail(kind.error()));
  auto staging = BufferPool::create({.buffer_bytes = 4 << 20, .buffer_count = 16}, make_host_allocator());
  if (!storage || !staging) {
    std::fprintf(stderr, "corockpt_train: %s\n", (!storage ? storage.error() : staging.error()).to_string().c_str());
    return 2;
  }
  (*storage)->register_buffers((*staging)->regions());
  CheckpointIo io{&runtime, storage->get(), staging->get()};
  // The checkpoint's own communicators, never the training loop's; a rank that stops
  // answering fails the save within the deadline instead of hanging it.
  const CommOptions comm{.deadline = std::chrono::milliseconds(args.deadline_ms)};

  std::vector<RankResult> results;
  int my_rank = 0;
  if (args.backend == "mpi") {
    auto world = make_mpi_world(runtime, comm);
    if (!world) {
      std::fprintf(stderr, "corockpt_train: %s\n", world.error().to_string().c_str());
      return 2;
    }
    my_rank = (*world)->rank();
    // The rank's GPU is its index on its node (mpirun says it; one node otherwise).
    int local_rank = my_rank;
    if (const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK")) local_rank = std::atoi(local);
    results.push_back(run_rank(args, *spec, my_rank, local_rank, *world, io));
    // The model's digest is the sum of the ranks'.
    std::uint64_t mine[2] = {results[0].digest, results[0].reference_digest};
    std::vector<std::uint64_t> all(2 * static_cast<std::size_t>((*world)->size()));
    auto gathered = runtime.spawn((*world)->all_gather(std::as_bytes(std::span(mine)), std::as_writable_bytes(std::span(all)))).get();
    if (!gathered) {
      std::fprintf(stderr, "corockpt_train: %s\n", gathered.error().to_string().c_str());
      if (results[0].error.empty()) results[0].error = gathered.error().to_string();
    }
    results[0].digest = results[0].reference_digest = 0;
    for (std::size_t i = 0; i < all.size(); i += 2) {
      results[0].digest += all[i];
      results[0].reference_digest += all[i + 1];
    }
    world->reset();
    // After a failure a peer may be dead, and MPI_Finalize could wait for it for ever:
    // exit without it (non-zero, below), which makes mpirun end the job.
    if (results[0].error.empty()) {
      if (auto done = finalize_mpi(comm.deadline); !done) results[0].error = done.error().to_string();
    }
  } else {
    if (auto fits = check_ranks_in_process(spec->world_size); !fits) {
      std::fprintf(stderr, "corockpt_train: %s\n", fits.error().to_string().c_str());
      return 2;
    }
    auto world = make_local_world(runtime, spec->world_size, comm);
    if (!world) {
      std::fprintf(stderr, "corockpt_train: %s\n", world.error().to_string().c_str());
      return 2;
    }
    results.resize(spec->world_size);
    std::vector<std::thread> threads;
    for (int r = 0; r < spec->world_size; ++r) {
      threads.emplace_back([&, r] { results[r] = run_rank(args, *spec, r, r, (*world)[r], io); });
    }
    for (auto& t : threads) t.join();
  }
  for (const auto& r : results) {
    if (!r.error.empty()) {
      std::fprintf(stderr, "corockpt_train: %s\n", r.error.c_str());
      return 1;
    }
  }
  if (!args.trace.empty()) {
    if (auto ok = runtime.tracer().write_chrome_json(args.trace); !ok) std::fprintf(stderr, "%s\n", ok.error().to_string().c_str());
  }
  if (my_rank != 0) return 0;
  std::uint64_t state_bytes = 0;
  for (const auto& r : results) state_bytes += r.stats.state_bytes;
  print_summary(args, results, state_bytes);
  if (!args.resume.empty() && !stop_requested.load()) {
    std::uint64_t digest = 0, reference = 0;
    for (const auto& r : results) {
      digest += r.digest;
      reference += r.reference_digest;
    }
    const bool same = digest == reference;
    std::printf("resumed run %s an uninterrupted run (state digest %016llx vs %016llx)\n",
                same ? "is bit-identical to" : "DIFFERS from", static_cast<unsigned long long>(digest),
                static_cast<unsigned long long>(reference));
    if (!same) return 1;
  }
  if (stop_requested.load()) std::printf("stopped by SIGTERM at step %lld\n", static_cast<long long>(results[0].end_step));
  return 0;
}
