#include "corockpt/ckpt/async_checkpointer.hpp"

#include <algorithm>
#include <cstdio>
#include <functional>

#include "corockpt/ckpt/checkpoint_directory.hpp"
#include "corockpt/ckpt/detail/save_state.hpp"

namespace corockpt {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

}  // namespace

std::int64_t SaveHandle::step() const { return state_->step; }
bool SaveHandle::skipped() const { return state_->skipped; }
const std::optional<Error>& SaveHandle::previous_failure() const { return state_->previous_failure; }
bool SaveHandle::snapshot_ready() const { return state_->snapshot.is_set(); }
bool SaveHandle::done() const { return state_->finished.is_set(); }
bool SaveHandle::wait_for(std::chrono::milliseconds timeout) const { return state_->finished.wait_for(timeout); }

Result<void> SaveHandle::wait_snapshot() {
  const auto start = Clock::now();
  state_->snapshot.wait();
  std::lock_guard lock(state_->mutex);
  state_->times.stall_seconds += seconds_since(start);
  return state_->snapshot_result;
}

Task<void> SaveHandle::snapshot_taken() {
  const auto start = Clock::now();
  std::shared_ptr<detail::SaveState> state = state_;  // the frame keeps it alive
  if (auto ok = co_await state->snapshot.async_wait(); !ok) co_return ok;
  std::lock_guard lock(state->mutex);
  state->times.stall_seconds += seconds_since(start);
  co_return state->snapshot_result;
}

std::size_t SaveHandle::unit_count() const { return state_->unit_fences.size(); }

bool SaveHandle::snapshot_ready(std::size_t unit) const {
  return unit < state_->unit_fences.size() && state_->unit_fences[unit].is_set();
}

namespace {

Error no_such_unit(std::size_t unit, std::size_t count) {
  return Error{Errc::invalid_argument,
               "unit " + std::to_string(unit) + " is not one of the save's " + std::to_string(count) + " units",
               {.operation = "wait_snapshot"}, 0};
}

// A unit's outcome once its fence is open: copied, or the whole snapshot's result.
Result<void> unit_outcome(detail::SaveState& state, std::size_t unit, Clock::time_point waited_from) {
  std::lock_guard lock(state.mutex);
  state.times.stall_seconds += seconds_since(waited_from);
  if (state.unit_copied[unit]) return {};
  return state.snapshot_result;
}

}  // namespace

Result<void> SaveHandle::wait_snapshot(std::size_t unit) {
  if (unit >= state_->unit_fences.size()) return fail(no_such_unit(unit, state_->unit_fences.size()));
  const auto start = Clock::now();
  state_->unit_fences[unit].wait();
  return unit_outcome(*state_, unit, start);
}

Task<void> SaveHandle::snapshot_taken(std::size_t unit) {
  std::shared_ptr<detail::SaveState> state = state_;  // the frame keeps it alive
  if (unit >= state->unit_fences.size()) co_return fail(no_such_unit(unit, state->unit_fences.size()));
  const auto start = Clock::now();
  if (auto ok = co_await state->unit_fences[unit].async_wait(); !ok) co_return ok;
  co_return unit_outcome(*state, unit, start);
}

Result<SaveReport> SaveHandle::wait() const {
  state_->finished.wait();
  std::lock_guard lock(state_->mutex);
  return state_->result;
}

Task<SaveReport> SaveHandle::finished() {
  std::shared_ptr<detail::SaveState> state = state_;
  if (auto ok = co_await state->finished.async_wait(); !ok) co_return fail(ok.error());
  std::lock_guard lock(state->mutex);
  co_return state->result;
}

SaveTimes SaveHandle::times() const {
  std::lock_guard lock(state_->mutex);
  return state_->times;
}

Result<std::unique_ptr<AsyncCheckpointer>> AsyncCheckpointer::create(Model& model, CheckpointIo io,
                                                                     Runtime::Strand executor,
                                                                     AsyncCheckpointerOptions options) {
  if (options.root.empty()) return fail(Errc::invalid_argument, "AsyncCheckpointer needs a root directory");
  if (!options.device) options.device = model.device();
  std::unique_ptr<AsyncCheckpointer> self(
      new AsyncCheckpointer(save_scope(model), model.tracer(), io, std::move(executor), std::move(options)));
  auto chunks = LocalChunks::of(model);
  if (!chunks) return fail(chunks.error().with_rank(model.rank()));
  self->live_.emplace(std::move(*chunks));
  if (auto ok = self->resolve_step_order(); !ok) return fail(ok.error().with_rank(model.rank()));
  if (auto ok = self->prepare_staging(); !ok) return fail(ok.error());
  return self;
}

Result<std::unique_ptr<AsyncCheckpointer>> AsyncCheckpointer::create(SaveScope scope, std::vector<LocalChunk> chunks,
                                                                     CheckpointIo io, Runtime::Strand executor,
                                                                     AsyncCheckpointerOptions options) {
  if (options.root.empty()) return fail(Errc::invalid_argument, "AsyncCheckpointer needs a root directory");
  if (!scope.world) return fail(Errc::invalid_argument, "AsyncCheckpointer needs a world communicator");
  std::unique_ptr<AsyncCheckpointer> self(
      new AsyncCheckpointer(std::move(scope), nullptr, io, std::move(executor), std::move(options)));
  self->live_.emplace(LocalChunks::from(std::move(chunks)));
  self->own_inputs_ = true;
  if (auto ok = self->resolve_step_order(); !ok) return fail(ok.error());
  if (auto ok = self->prepare_staging(); !ok) return fail(ok.error());
  return self;
}

Result<void> AsyncCheckpointer::resolve_step_order() {
  std::uint32_t units = 0;
  for (const auto& chunk : live_->chunks()) units = std::max(units, chunk.unit + 1);
  if (options_.step_order.empty()) {
    for (std::uint32_t u = 0; u < units; ++u) step_order_.push_back(u);
    return {};
  }
  std::vector<bool> seen(units, false);
  for (std::uint32_t u : options_.step_order) {
    if (u >= units || seen[u]) {
      return fail(Errc::invalid_argument,
                  "step_order must name each of the " + std::to_string(units) + " units once; unit " +
                      std::to_string(u) + (u >= units ? " does not exist" : " is named twice"),
                  {.operation = "AsyncCheckpointer"});
    }
    seen[u] = true;
  }
  if (options_.step_order.size() != units) {
    return fail(Errc::invalid_argument,
                "step_order names " + std::to_string(options_.step_order.size()) + " of the " + std::to_string(units) +
                    " units; it must name each once",
                {.operation = "AsyncCheckpointer"});
  }
  step_order_ = options_.step_order;
  return {};
}

namespace {

// The pool a staging budget streams through: about 8 buffers (as many writes in flight),
// each a multiple of 4 KiB (O_DIRECT) between 4 KiB and 8 MiB, at least 2 (one staging
// while another is written), so the smallest pool is 8 KiB whatever the budget.
BufferPoolOptions budget_pool_options(std::uint64_t budget) {
  constexpr std::uint64_t page = 4096, largest = 8ull << 20;
  const std::uint64_t buffer = std::clamp<std::uint64_t>(budget / 8 / page * page, page, largest);
  return {.buffer_bytes = buffer, .buffer_count = std::max<std::uint64_t>(2, budget / buffer)};
}

}  // namespace

Result<void> AsyncCheckpointer::prepare_staging() {
  const int rank = scope_.rank;
  const std::uint64_t needed = Snapshot::bytes_needed(live_->chunks(), rank);
  for (const auto& chunk : live_->chunks()) {
    if (chunk.writer) stats_.state_bytes += chunk.bytes.size();
  }
  std::shared_ptr<BufferAllocator> allocator = options_.allocator;
  if (!allocator) allocator = options_.device ? options_.device->staging_allocator() : make_host_allocator();
  const std::uint64_t budget = options_.staging_budget == 0 ? needed : options_.staging_budget;
  if (budget >= needed) {
    auto snapshot = Snapshot::create(live_->chunks(), rank, std::move(allocator));
    if (!snapshot) return fail(snapshot.error().with_rank(rank));
    snapshot_ = std::move(*snapshot);
    stats_.staging_bytes = needed;
    return {};
  }
  // Streamed: device chunks go through the device, so it must be theirs.
  for (const auto& chunk : live_->chunks()) {
    if (chunk.writer && chunk.space != MemorySpace::host &&
        (!options_.device || options_.device->space() != chunk.space)) {
      return fail(Errc::invalid_argument,
                  chunk.name + " lies in " + std::string(to_string(chunk.space)) +
                      " memory: the save streams it through that device (AsyncCheckpointerOptions::device)",
                  {.rank = rank, .fqn = chunk.name, .operation = "AsyncCheckpointer"});
    }
  }
  auto pool = BufferPool::create(budget_pool_options(budget), std::move(allocator));
  if (!pool) return fail(pool.error().with_rank(rank));
  budget_pool_ = std::move(*pool);
  stats_.staging_bytes = budget_pool_->total_bytes();
  return {};
}

AsyncCheckpointer::~AsyncCheckpointer() {
  std::shared_ptr<detail::SaveState> last;
  {
    std::lock_guard lock(mutex_);
    last = last_;
  }
  if (last && last->task.valid()) last->task.wait_for(std::chrono::hours(24 * 365));  // it refers to us
}

Result<SaveHandle> AsyncCheckpointer::async_save(std::int64_t step, nlohmann::json user) {
  if (own_inputs_) {
    return fail(Errc::invalid_argument, "this checkpointer was created from chunks: give each save its SaveInputs",
                {.rank = scope_.rank, .operation = "async_save"});
  }
  auto state = std::make_shared<detail::SaveState>(step_order_.size());
  state->step = step;
  return start_save(std::move(state), std::move(user));
}

Result<SaveHandle> AsyncCheckpointer::async_save(std::int64_t step, nlohmann::json user, SaveInputs inputs) {
  if (!own_inputs_) {
    return fail(Errc::invalid_argument, "this checkpointer saves its model's chunks: call async_save(step, user)",
                {.rank = scope_.rank, .operation = "async_save"});
  }
  const auto& layout = live_->chunks();
  if (inputs.chunks.size() != layout.size()) {
    return fail(Errc::invalid_argument,
                "the save has " + std::to_string(inputs.chunks.size()) + " chunks, the checkpointer's layout " +
                    std::to_string(layout.size()),
                {.rank = scope_.rank, .operation = "async_save"});
  }
  for (std::size_t i = 0; i < layout.size(); ++i) {
    const LocalChunk& a = inputs.chunks[i];
    const LocalChunk& b = layout[i];
    if (a.name != b.name || a.dtype != b.dtype || a.shape != b.shape || a.box != b.box ||
        a.bytes.size() != b.bytes.size() || a.writer != b.writer || a.space != b.space) {
      return fail(Errc::invalid_argument,
                  a.name + " " + a.box.to_string() + " differs from the checkpointer's layout (" + b.name + " " +
                      b.box.to_string() + "): its name, dtype, shape, box or place changed",
                  {.rank = scope_.rank, .fqn = a.name, .operation = "async_save"});
    }
  }
  auto state = std::make_shared<detail::SaveState>(step_order_.size());
  state->step = step;
  state->chunks = std::move(inputs.chunks);
  state->objects = std::move(inputs.objects);
  return start_save(std::move(state), std::move(user));
}

Result<SaveHandle> AsyncCheckpointer::start_save(std::shared_ptr<detail::SaveState> state, nlohmann::json user) {
  // The save copies the state as it is now: on a device, after the compute queued so far
  // (the optimizer step being saved), not after what the loop queues next (the next
  // forward/backward, which the copies overlap). So the order is taken here, on the
  // caller's thread, not when the copies start on the strand.
  if (options_.device) {
    if (auto ok = options_.device->order_after_compute(); !ok) {
      return fail(std::move(ok.error().with_rank(scope_.rank).with_operation("async_save")));
    }
  }
  // Refused now, not when the save commits; every rank passes the same blob, so all
  // refuse alike.
  if (auto bounded = check_user_blob(user); !bounded) {
    return fail(std::move(bounded.error().with_rank(scope_.rank).with_operation("async_save")));
  }
  // What forward changes is copied now, before the caller's next forward runs.
  auto captured = detail::RequestCapture::take(
      *io_.runtime, state->chunks.empty() ? std::span<const LocalChunk>(live_->chunks()) : state->chunks,
      options_.device.get());
  if (!captured) return fail(std::move(captured.error().with_rank(scope_.rank).with_operation("async_save")));
  state->captured = std::move(*captured);
  std::shared_ptr<detail::SaveState> previous;
  {
    std::lock_guard lock(mutex_);
    if (stopped_) return fail(Errc::cancelled, "the checkpointer is stopped", {.operation = "async_save"});
    if (broken_) {
      return fail(broken_->code, "checkpointing is off: the checkpoint communicator broke (" + broken_->message + ")",
                  {.rank = scope_.rank, .operation = "async_save"});
    }
    ++stats_.requested;
    previous = last_;
    const bool busy = previous && !previous->finished.is_set();
    if (busy && options_.when_busy == BusyPolicy::skip) {
      ++stats_.skipped;
      state->skipped = true;
      state->result = fail(Errc::cancelled, "skipped: the save of step " + std::to_string(previous->step) +
                                                " was still running");
      state->open_snapshot();
      state->finished.set();
      return SaveHandle(state);
    }
    if (busy) ++stats_.waited;
    if (previous && !busy && !previous->result) {
      state->previous_failure = previous->result.error();
      if (options_.stop_on_failure) return fail(previous->result.error());
    }
    if (!busy) previous = nullptr;  // nothing to wait for
    last_ = state;
  }
  state->task = io_.runtime->spawn(executor_, run_save(state, std::move(previous), std::move(user)));
  return SaveHandle(state);
}

Task<void> AsyncCheckpointer::run_save(std::shared_ptr<detail::SaveState> state,
                                       std::shared_ptr<detail::SaveState> previous, nlohmann::json user) {
  if (previous) (void)co_await previous->finished.async_wait();
  const auto start = Clock::now();
  const std::string dir = options_.root + "/" + step_checkpoint_name(state->step);
  SaveOptions options;
  options.user = std::move(user);
  options.plan_cache = plan_cache_;
  for (const auto& [name, bytes] : state->objects) options.objects.push_back({name, std::as_bytes(std::span(bytes))});
  live_->load_steps();
  // This save's chunks: its own (a checkpointer created from chunks), or the model's;
  // those captured at request (RequestCapture) are read from their copies.
  const std::span<const LocalChunk> live = state->captured.substitute(
      state->chunks.empty() ? std::span<const LocalChunk>(live_->chunks()) : state->chunks);
  Result<SaveReport> saved;
  auto persist_start = Clock::now();
  // Spans for the trace (when the model records one): the snapshot's copy, the persist.
  std::optional<ScopedSpan> span;
  if (tracer_) span.emplace(*tracer_, "snapshot step " + std::to_string(state->step), "copy", scope_.rank);
  if (snapshot_) {
    // Units open one by one as their copies land, in the optimizer's order.
    detail::SaveState* s = state.get();
    std::function<void(std::uint32_t)> on_unit = [s](std::uint32_t unit) { s->open_unit(unit); };
    std::span<const std::uint32_t> order = step_order_;
    auto taken = co_await snapshot_->take(*io_.runtime, live, options_.device.get(), /*ordered=*/true, order,
                                          std::move(on_unit));
    span.reset();
    if (tracer_) span.emplace(*tracer_, "persist step " + std::to_string(state->step), "checkpoint", scope_.rank);
    {
      std::lock_guard lock(state->mutex);
      state->snapshot_result = taken;
      state->times.snapshot_seconds = seconds_since(start);
    }
    state->open_snapshot();
    persist_start = Clock::now();
    if (taken) {
      options.file_images = snapshot_->file_images();
      saved = co_await save_chunks(scope_, snapshot_->chunks(), io_, dir, std::move(options));
    } else {
      // Only a stopping runtime fails a copy; the other ranks' saves then fail by their
      // deadline, and nothing commits.
      saved = fail(taken.error().with_rank(scope_.rank));
    }
  } else {
    // Within the staging budget: the save streams the live state through its own pool,
    // unit by unit in the step order; each unit's fence opens once its bytes are staged.
    detail::SaveState* s = state.get();
    options.device = options_.device;
    options.unit_order = step_order_;
    options.on_unit_staged = [s](std::uint32_t unit) { s->open_unit(unit); };
    options.on_data_written = [s, start] {
      {
        std::lock_guard lock(s->mutex);
        s->times.snapshot_seconds = seconds_since(start);
      }
      s->open_snapshot();
    };
    CheckpointIo io = io_;
    io.staging = budget_pool_.get();
    saved = co_await save_chunks(scope_, live, io, dir, std::move(options));
    state->open_snapshot();  // also after a failure before the data was written
  }
  span.reset();
  {
    std::lock_guard lock(state->mutex);
    state->times.persist_seconds = seconds_since(persist_start);
    if (saved) state->times.bytes = saved->rank_bytes;
  }
  if (saved && options_.keep_last > 0 && scope_.rank == 0) {
    auto removed = co_await remove_old_checkpoints(io_, options_.root, options_.keep_last);
    if (!removed) std::fprintf(stderr, "corockpt: retention: %s\n", removed.error().to_string().c_str());
  }
  finish(*state, std::move(saved));
  co_return Result<void>{};
}

void AsyncCheckpointer::finish(detail::SaveState& state, Result<SaveReport> result) {
  {
    std::lock_guard lock(mutex_);
    if (result) {
      ++stats_.committed;
    } else {
      ++stats_.failed;
      // A collective that timed out leaves the checkpoint communicator unusable.
      if (result.error().code == Errc::timeout && !broken_) broken_ = result.error();
    }
  }
  {
    std::lock_guard lock(state.mutex);
    state.result = std::move(result);
  }
  state.open_snapshot();  // a save abandoned at stop never leaves a fence shut
  state.finished.set();
}

Result<void> AsyncCheckpointer::stop(std::chrono::milliseconds deadline) {
  std::shared_ptr<detail::SaveState> last;
  {
    std::lock_guard lock(mutex_);
    stopped_ = true;
    last = last_;
  }
  if (!last) return {};
  if (!last->finished.wait_for(deadline)) {
    last->task.cancel();
    last->task.wait_for(std::chrono::hours(24 * 365));
    if (!last->finished.is_set()) finish(*last, fail(Errc::cancelled, "abandoned at stop"));
    return fail(Errc::timeout, "abandoned the save of step " + std::to_string(last->step) + " after " +
                                   std::to_string(deadline.count()) + " ms; nothing of it committed");
  }
  std::lock_guard lock(last->mutex);
  if (!last->result) return fail(last->result.error());
  return {};
}

CheckpointerStats AsyncCheckpointer::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace corockpt
