#pragma once
/// @file
/// `AsyncCheckpointer`: checkpoints that cost the training loop no more than a memory
/// copy. One per rank, bound to the rank's model registration (or to chunks of the
/// caller's own, such as a PyTorch state dict's tensors, each save bringing its own: see
/// the second `create`), the engines (runtime, storage, staging) and a directory of
/// checkpoints (`<root>/step-<N>`, see checkpoint_directory.hpp).
///
/// `async_save(step)` returns at once with a `SaveHandle`. The save then runs in two
/// phases on the rank's executor:
/// 1. snapshot: the rank's chunks are copied into staging memory allocated once (see
///    snapshot.hpp). No collective. The training loop must wait for it
///    (`wait_snapshot()` or `co_await snapshot_taken()`) before its optimizer step
///    mutates the state — that fence is the only stall; forward and backward of the
///    next step run meanwhile.
/// 2. persist: save_chunks from the snapshot (data files, plans to rank 0, commit), then
///    retention (`keep_last`).
///
/// With a staging budget smaller than the state there is no snapshot memory: the save
/// writes straight from the live state and the snapshot counts as taken once this rank's
/// data files are durable (the stall grows to the write time; `stats()` shows it). That
/// needs the state in host memory.
///
/// At most one save is in flight. A request while one runs waits for it (`wait`, the
/// default: the new snapshot starts when the previous save ends) or is skipped (`skip`);
/// both are counted. A failed save is reported on its handle and by the next
/// `async_save` (`SaveHandle::previous_failure`); training goes on unless
/// `stop_on_failure`. A communicator error (a rank stopped answering: the world's
/// deadline passed) breaks the checkpointer: later saves fail at once, saying so, instead
/// of hanging in a collective. Checkpoint traffic uses the model's world, which must be
/// a communicator of its own, never the training loop's.

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "corockpt/ckpt/checkpoint_io.hpp"
#include "corockpt/ckpt/local_chunks.hpp"
#include "corockpt/ckpt/model.hpp"
#include "corockpt/ckpt/save.hpp"
#include "corockpt/ckpt/snapshot.hpp"

namespace corockpt {

enum class BusyPolicy { wait, skip };

struct AsyncCheckpointerOptions {
  std::string root;  ///< checkpoints go to `<root>/step-<N>`
  BusyPolicy when_busy = BusyPolicy::wait;
  /// Staging memory for the snapshot; 0 means "the state's size". Smaller than the
  /// state: no snapshot; a pool of this many bytes (buffers of budget/8, between 4 KiB
  /// and 8 MiB; at least two) through which the save streams the live state, copy ->
  /// write -> reuse, unit by unit in the step order, each unit's fence opening once its
  /// bytes are in the pool. The stall is then what the budget cannot absorb: the units
  /// that wait for earlier ones to reach the disk. Host and device state alike.
  std::uint64_t staging_budget = 0;
  /// The device the model's memory lies on (its TensorViews' space `cuda`): snapshots
  /// copy through it. Null: the model's own (Model::device; none for host memory).
  std::shared_ptr<Device> device;
  /// Where snapshot memory comes from; null means the device's staging allocator (pinned
  /// host memory for cuda), or plain page-aligned host memory without a device.
  std::shared_ptr<BufferAllocator> allocator;
  /// Keep this many newest checkpoints (rank 0 deletes older ones after each commit);
  /// 0 keeps all.
  int keep_last = 0;
  /// A failed save makes the next async_save return its error instead of saving.
  bool stop_on_failure = false;
  /// The order the optimizer steps the units (LocalChunk::unit), each once: the snapshot
  /// copies them in it and opens each unit's fence (SaveHandle::wait_snapshot(unit)) as
  /// soon as its bytes are copied. Empty: ascending (registration order).
  std::vector<std::uint32_t> step_order;
};

/// Figures of one save on this rank.
struct SaveTimes {
  double snapshot_seconds = 0;  ///< copying into staging (or streaming, without it)
  double persist_seconds = 0;   ///< from the end of the snapshot to commit (or failure)
  double stall_seconds = 0;     ///< time the training loop spent blocked in the fence
  std::uint64_t bytes = 0;      ///< this rank's data file bytes
};

namespace detail {
struct SaveState;
}

/// A save's own inputs, for a checkpointer created from chunks (not a Model): the chunks
/// as they lie now (the same names, dtypes, shapes, boxes and byte counts as at create, in
/// the same order; the memory may differ from one save to the next) and the values that
/// are not tensors (copied: the caller may change them once async_save returns). Both
/// stay with the save until it ends.
struct SaveInputs {
  std::vector<LocalChunk> chunks;
  std::vector<std::pair<std::string, std::string>> objects;
};

/// One save's handle: what the training loop waits on. Copies share the save.
/// Thread rules: every member may be called from any thread, concurrently (the save's
/// state is guarded inside); the blocking ones (wait_snapshot, wait, wait_for) never on
/// the runtime's io thread, whose coroutines co_await snapshot_taken / finished instead.
class SaveHandle {
 public:
  /// An empty handle, to assign a real one to later (no member may be called on it).
  SaveHandle() = default;

  std::int64_t step() const;
  /// The request came while a save ran and the policy is `skip`: nothing was saved.
  bool skipped() const;
  /// The previous save's error, if it failed.
  const std::optional<Error>& previous_failure() const;

  bool snapshot_ready() const;
  bool done() const;

  /// Blocks until the snapshot is taken (the training thread's fence; never call it on
  /// the runtime's io thread). The time blocked is the save's stall.
  Result<void> wait_snapshot();
  /// The same for a training loop written as a coroutine.
  Task<void> snapshot_taken();

  /// Per-unit fences, for a loop that steps unit by unit (in the checkpointer's
  /// step_order()): unit `unit`'s bytes are copied once it opens, so the optimizer may
  /// step that unit while the snapshot copies the next. The whole-state fence above is
  /// every unit's. The time blocked adds to the stall.
  /// @returns Errc::invalid_argument for a unit past unit_count(); the snapshot's error.
  std::size_t unit_count() const;
  bool snapshot_ready(std::size_t unit) const;
  Result<void> wait_snapshot(std::size_t unit);
  Task<void> snapshot_taken(std::size_t unit);

  /// Blocks until the save has committed or failed.
  Result<SaveReport> wait() const;
  Task<SaveReport> finished();
  /// Gives up waiting after `timeout`. @returns whether the save finished.
  bool wait_for(std::chrono::milliseconds timeout) const;

  SaveTimes times() const;

 private:
  friend class AsyncCheckpointer;
  explicit SaveHandle(std::shared_ptr<detail::SaveState> state) : state_(std::move(state)) {}

  std::shared_ptr<detail::SaveState> state_;
};

struct CheckpointerStats {
  int requested = 0;
  int committed = 0;
  int failed = 0;
  int skipped = 0;  ///< requests dropped because a save was running (policy skip)
  int waited = 0;   ///< requests that waited for the save before them (policy wait)
  std::uint64_t staging_bytes = 0;  ///< snapshot memory, or the budget's pool: allocated once
  std::uint64_t state_bytes = 0;    ///< what this rank writes per checkpoint
};

/// Thread rules: create it, call async_save and stop from the rank's training thread (or
/// any one thread at a time per checkpointer; not the runtime's io thread, where stop
/// would block it); stats, root and the handles may be read from any thread. The saves
/// themselves run on the `executor` given to create, beside the training loop; between
/// async_save and the snapshot fence (SaveHandle::wait_snapshot) the loop may run
/// forward and backward but must not change the state the save copies (the optimizer
/// step). The model, the engines in `io` and the executor must outlive the checkpointer.
class AsyncCheckpointer {
 public:
  /// Lists the model's chunks and allocates the snapshot memory, once.
  /// `executor` is where this rank's saves run (its strand for in-process ranks).
  static Result<std::unique_ptr<AsyncCheckpointer>> create(Model& model, CheckpointIo io, Runtime::Strand executor,
                                                           AsyncCheckpointerOptions options);
  /// The same for chunks of the caller's own (a PyTorch state dict's): `chunks` fixes the
  /// layout the snapshot memory is allocated for; each save then brings its own
  /// (async_save with SaveInputs). The saves are collective over `scope.world`.
  static Result<std::unique_ptr<AsyncCheckpointer>> create(SaveScope scope, std::vector<LocalChunk> chunks,
                                                           CheckpointIo io, Runtime::Strand executor,
                                                           AsyncCheckpointerOptions options);
  ~AsyncCheckpointer();

  /// Starts a save of the state as it is now (the snapshot is taken before the fence
  /// returns). Returns at once, but for the chunks forward changes (LocalChunk::at_request:
  /// buffers with ParamSpec::forward_mutates), which it copies first, on the caller's
  /// thread (from a device, through it, after the compute queued so far): the fences
  /// protect only what the optimizer step changes. `user` goes to the metadata (step,
  /// data-loader state...).
  /// @returns an error only when the checkpointer is broken, stopped, or
  ///   stop_on_failure and the previous save failed, or when that copy fails (the
  ///   device's error; nothing is started then).
  Result<SaveHandle> async_save(std::int64_t step, nlohmann::json user = nlohmann::json::object());
  /// The same for a checkpointer created from chunks: this save's chunks and objects.
  /// @returns Errc::invalid_argument naming the first chunk whose layout differs from
  ///   the one at create (nothing is started then).
  Result<SaveHandle> async_save(std::int64_t step, nlohmann::json user, SaveInputs inputs);

  /// Takes no more saves; waits up to `deadline` for the one in flight, then cancels it
  /// (nothing of it commits) and waits for it to stop. @returns the in-flight save's
  /// error, or Errc::timeout when it had to be abandoned.
  Result<void> stop(std::chrono::milliseconds deadline);

  CheckpointerStats stats() const;
  /// The units in the order the snapshot copies them (options' step_order, or ascending).
  const std::vector<std::uint32_t>& step_order() const { return step_order_; }
  const std::string& root() const { return options_.root; }

 private:
  AsyncCheckpointer(SaveScope scope, Tracer* tracer, CheckpointIo io, Runtime::Strand executor,
                    AsyncCheckpointerOptions options)
      : scope_(std::move(scope)), tracer_(tracer), io_(io), executor_(std::move(executor)), options_(std::move(options)) {}
  /// Allocates the snapshot memory for live_, or the staging budget's pool.
  Result<void> prepare_staging();
  /// Checks options_.step_order against the chunks' units (each once) or makes it ascending.
  Result<void> resolve_step_order();
  Task<void> run_save(std::shared_ptr<detail::SaveState> state, std::shared_ptr<detail::SaveState> previous,
                      nlohmann::json user);
  /// The request's bookkeeping (stopped, broken, busy policy); then the save's task.
  Result<SaveHandle> start_save(std::shared_ptr<detail::SaveState> state, nlohmann::json user);
  void finish(detail::SaveState& state, Result<SaveReport> result);

  SaveScope scope_;
  Tracer* tracer_;  ///< the model's, when it records a trace
  CheckpointIo io_;
  Runtime::Strand executor_;
  AsyncCheckpointerOptions options_;
  std::optional<LocalChunks> live_;  ///< a Model's chunks, or the layout given at create
  bool own_inputs_ = false;          ///< created from chunks: each save brings SaveInputs
  std::vector<std::uint32_t> step_order_;  ///< every unit of the chunks, once
  std::unique_ptr<Snapshot> snapshot_;      ///< the whole state's copy, when the budget holds it
  /// Its saves' plans: after the first, each sends rank 0 a digest instead (the layout
  /// of its chunks never changes).
  std::shared_ptr<SavePlanCache> plan_cache_ = make_save_plan_cache();
  std::unique_ptr<BufferPool> budget_pool_;  ///< else the buffers the save streams through
  std::shared_ptr<detail::SaveState> last_;
  mutable std::mutex mutex_;
  CheckpointerStats stats_;
  std::optional<Error> broken_;
  bool stopped_ = false;
};

}  // namespace corockpt
