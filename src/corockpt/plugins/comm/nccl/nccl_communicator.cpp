// The nccl communicator's collectives: checks, one NCCL group per operation enqueued in
// turn, completion polled through a CUDA event; split and abort. The bootstrap is in
// nccl_bootstrap.cpp, the shared state in nccl_state.hpp (see nccl_communicator.hpp).
#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "corockpt/plugins/comm/detail/backoff.hpp"
#include "corockpt/plugins/comm/detail/injected_latency.hpp"
#include "corockpt/plugins/comm/detail/planned_communicator.hpp"
#include "corockpt/plugins/comm/detail/turn_queue.hpp"
#include "corockpt/plugins/comm/nccl/host_staging.hpp"
#include "corockpt/plugins/comm/nccl/nccl_state.hpp"
#include "corockpt/plugins/device/cuda/cuda_error.hpp"
#include "corockpt/runtime/deadline.hpp"
#include "corockpt/runtime/trace.hpp"

namespace corockpt::nccl_detail {

namespace {

using comm_detail::OpKind;
using comm_detail::Plan;
using comm_detail::poll_with_backoff;
using comm_detail::TurnGuard;
using Ticket = comm_detail::TurnQueue::Ticket;
using cuda_detail::cuda_error;
using cuda_detail::use_device;

/// A CUDA event recorded on a stream, destroyed with its owner (CUDA frees an event still
/// pending once the stream passes it).
class RecordedEvent {
 public:
  RecordedEvent() = default;
  ~RecordedEvent() {
    if (event_ != nullptr) (void)cudaEventDestroy(event_);
  }
  RecordedEvent(const RecordedEvent&) = delete;
  RecordedEvent& operator=(const RecordedEvent&) = delete;

  Result<void> record(int device, cudaStream_t stream) {
    if (auto ready = use_device(device); !ready) return ready;
    if (cudaError_t code = cudaEventCreateWithFlags(&event_, cudaEventDisableTiming); code != cudaSuccess) {
      event_ = nullptr;
      return fail(cuda_error(code, "cudaEventCreateWithFlags"));
    }
    if (cudaError_t code = cudaEventRecord(event_, stream); code != cudaSuccess) {
      return fail(cuda_error(code, "cudaEventRecord"));
    }
    return {};
  }
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// ---------------------------------------------------------------------------------------
// The communicator

std::string bytes(std::size_t n) { return std::to_string(n) + " bytes"; }

class NcclCommunicator final : public comm_detail::PlannedCommunicator {
 public:
  NcclCommunicator(Runtime& runtime, std::shared_ptr<NcclState> state, std::unique_ptr<StreamResources> resources,
                   int rank, int size, std::string name, CommOptions options, int world_rank)
      : runtime_(runtime), state_(std::move(state)), resources_(std::move(resources)), rank_(rank), size_(size),
        name_(std::move(name)), options_(options), world_rank_(world_rank) {}

  ~NcclCommunicator() override {
    // Abort, not destroy: it never waits for a peer (see the header).
    ncclComm_t comm = state_->take_for_abort(Error{Errc::unavailable, "the communicator was destroyed", {}, 0});
    if (comm != nullptr) {
      (void)use_device(device());
      (void)ncclCommAbort(comm);
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view backend() const override { return "nccl"; }
  MemorySpace memory_space() const override { return MemorySpace::cuda; }
  const std::string& name() const override { return name_; }

  Task<std::shared_ptr<Communicator>> split(int color, int key) override;
  /// One group of ncclSend/ncclRecv (see Communicator::exchange); tags are only checked.
  Task<void> exchange(std::span<const std::byte> send, std::span<const std::size_t> send_counts,
                      std::span<std::byte> recv, std::span<const std::size_t> recv_counts, int tag) override {
    return run({.kind = OpKind::exchange, .send = send, .recv = recv, .counts = send_counts,
                .recv_counts = recv_counts, .tag = tag});
  }

 private:
  int device() const { return resources_->device; }
  cudaStream_t stream() const { return resources_->stream; }

  Task<void> run(Plan plan) override;
  /// What can be checked on this rank: sizes, root, peer, tag.
  Result<void> check(const Plan& plan, const std::string& what) const;
  /// Whether `pointer` is device memory (of any GPU; NCCL then checks it is its own).
  static bool is_device_memory(const void* pointer);
  /// Waits for the turn, enqueues, waits for the event. Run under `with_deadline`.
  Task<void> execute(Plan plan, std::string what, std::shared_ptr<Ticket> ticket,
                     std::shared_ptr<HostStaging> staging);
  /// Queues the plan's NCCL calls as one group, after the copies of `staging`'s host
  /// spans to the device. @returns true when NCCL is still enqueueing (ncclInProgress).
  Result<bool> enqueue(Plan plan, HostStaging& staging);
  Task<std::shared_ptr<Communicator>> split_in_turn(int color, int key, std::string what,
                                                    std::shared_ptr<Ticket> ticket);
  /// Aborts the NCCL communicator (on a worker) after `why`; later operations fail.
  Task<void> abort(const Error& why);

  std::optional<Error> broken_error() const;
  void mark_broken(const Error& why);

  Runtime& runtime_;
  std::shared_ptr<NcclState> state_;
  std::unique_ptr<StreamResources> resources_;
  int rank_;
  int size_;
  const std::string name_;
  const CommOptions options_;
  int world_rank_;
};

bool NcclCommunicator::is_device_memory(const void* pointer) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, pointer) != cudaSuccess) return false;
  return attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged;
}

Result<void> NcclCommunicator::check(const Plan& plan, const std::string& what) const {
  const auto ranks = static_cast<std::size_t>(size_);
  const auto me = static_cast<std::size_t>(rank_);
  auto invalid = [&what](const std::string& why) { return fail(Errc::invalid_argument, what + ": " + why); };
  if (auto addressed = comm_detail::check_addressing(plan, size_, what); !addressed) return fail(addressed.error());
  if (plan.kind == OpKind::exchange) {
    return comm_detail::check_exchange(plan.send, plan.counts, plan.recv, plan.recv_counts, size_, rank_, plan.tag,
                                       what);
  }
  std::size_t total = 0;
  if (plan.kind == OpKind::all_gather_v || plan.kind == OpKind::gather_v) {
    if (plan.counts.size() != ranks) {
      return invalid(std::to_string(plan.counts.size()) + " counts for " + std::to_string(size_) + " ranks");
    }
    for (std::size_t count : plan.counts) total += count;
    if (plan.send.size() != plan.counts[me]) {
      return invalid("sends " + bytes(plan.send.size()) + " but its count is " + std::to_string(plan.counts[me]));
    }
  }
  switch (plan.kind) {
    case OpKind::all_gather:
      if (plan.recv.size() != plan.send.size() * ranks) {
        return invalid("receives into " + bytes(plan.recv.size()) + ", needs " + bytes(plan.send.size() * ranks));
      }
      break;
    case OpKind::all_gather_v:
      if (plan.recv.size() != total) return invalid("receives into " + bytes(plan.recv.size()) + ", needs " + bytes(total));
      break;
    case OpKind::gather_v:
      if (rank_ == plan.root && plan.recv.size() != total) {
        return invalid("(the root) receives into " + bytes(plan.recv.size()) + ", needs " + bytes(total));
      }
      break;
    default:
      break;
  }
  return {};
}

Result<bool> NcclCommunicator::enqueue(Plan plan, HostStaging& staging) {
  std::lock_guard lock(state_->mutex);
  ncclComm_t comm = state_->comm;
  if (comm == nullptr) return fail(Errc::unavailable, "communicator " + name_ + " was aborted");
  if (auto ready = use_device(device()); !ready) return fail(ready.error());
  if (auto staged = staging.enqueue_before(plan, stream()); !staged) return fail(std::move(staged.error()));
  const auto me = static_cast<std::size_t>(rank_);
  cudaStream_t s = stream();
  auto* recv = plan.recv.data();

  // The root's own part of a gather_v is a device copy, ahead of the group.
  if (plan.kind == OpKind::gather_v && rank_ == plan.root && !plan.send.empty()) {
    std::size_t offset = 0;
    for (std::size_t i = 0; i < me; ++i) offset += plan.counts[i];
    if (cudaError_t code = cudaMemcpyAsync(recv + offset, plan.send.data(), plan.send.size(),
                                           cudaMemcpyDeviceToDevice, s);
        code != cudaSuccess) {
      return fail(cuda_error(code, "cudaMemcpyAsync"));
    }
  }

  ncclResult_t first_error = ncclSuccess;
  const char* failed_call = "";
  auto call = [&](ncclResult_t result, const char* name) {
    if (result != ncclSuccess && result != ncclInProgress && first_error == ncclSuccess) {
      first_error = result;
      failed_call = name;
    }
  };
  call(ncclGroupStart(), "ncclGroupStart");
  switch (plan.kind) {
    case OpKind::all_gather:
      if (!plan.send.empty()) {
        call(ncclAllGather(plan.send.data(), recv, plan.send.size(), ncclUint8, comm, s), "ncclAllGather");
      }
      break;
    case OpKind::all_gather_v: {
      // One broadcast per rank, rooted at it, into its place in `recv`.
      std::size_t offset = 0;
      for (std::size_t i = 0; i < plan.counts.size(); ++i) {
        const std::size_t count = plan.counts[i];
        if (count != 0) {
          const void* from = i == me ? static_cast<const void*>(plan.send.data()) : recv + offset;
          call(ncclBroadcast(from, recv + offset, count, ncclUint8, static_cast<int>(i), comm, s), "ncclBroadcast");
        }
        offset += count;
      }
      break;
    }
    case OpKind::gather_v:
      if (rank_ == plan.root) {
        std::size_t offset = 0;
        for (std::size_t i = 0; i < plan.counts.size(); ++i) {
          const std::size_t count = plan.counts[i];
          if (i != me && count != 0) {
            call(ncclRecv(recv + offset, count, ncclUint8, static_cast<int>(i), comm, s), "ncclRecv");
          }
          offset += count;
        }
      } else if (!plan.send.empty()) {
        call(ncclSend(plan.send.data(), plan.send.size(), ncclUint8, plan.root, comm, s), "ncclSend");
      }
      break;
    case OpKind::broadcast:
      if (!plan.recv.empty()) {
        call(ncclBroadcast(recv, recv, plan.recv.size(), ncclUint8, plan.root, comm, s), "ncclBroadcast");
      }
      break;
    case OpKind::barrier:
      call(ncclAllReduce(resources_->scratch, resources_->scratch, 1, ncclInt32, ncclSum, comm, s), "ncclAllReduce");
      break;
    case OpKind::send:
      if (!plan.send.empty()) {
        call(ncclSend(plan.send.data(), plan.send.size(), ncclUint8, plan.peer, comm, s), "ncclSend");
      }
      break;
    case OpKind::recv:
      if (!plan.recv.empty()) call(ncclRecv(recv, plan.recv.size(), ncclUint8, plan.peer, comm, s), "ncclRecv");
      break;
    case OpKind::exchange: {
      // Every peer's send and receive in this one group: NCCL runs them together.
      std::size_t sent = 0, received = 0;
      for (std::size_t p = 0; p < plan.counts.size(); ++p) {
        if (plan.counts[p] != 0) {
          call(ncclSend(plan.send.data() + sent, plan.counts[p], ncclUint8, static_cast<int>(p), comm, s), "ncclSend");
        }
        if (plan.recv_counts[p] != 0) {
          call(ncclRecv(recv + received, plan.recv_counts[p], ncclUint8, static_cast<int>(p), comm, s), "ncclRecv");
        }
        sent += plan.counts[p];
        received += plan.recv_counts[p];
      }
      break;
    }
    case OpKind::split:  // split() makes its own call (ncclCommSplit), never a Plan
      break;
  }
  const ncclResult_t ended = ncclGroupEnd();
  if (first_error != ncclSuccess) return fail(nccl_error(first_error, failed_call, comm));
  if (ended == ncclInProgress) return true;
  if (ended != ncclSuccess) return fail(nccl_error(ended, "ncclGroupEnd", comm));
  return false;
}

Task<void> NcclCommunicator::execute(Plan plan, std::string what, std::shared_ptr<Ticket> ticket,
                                     std::shared_ptr<HostStaging> staging) {
  TurnGuard turn(state_->turns, ticket);
  Task<void> turn_comes = state_->turns.wait_turn(ticket);
  if (Result<void> my_turn = co_await std::move(turn_comes); !my_turn) co_return my_turn;

  auto enqueued = enqueue(plan, *staging);
  if (!enqueued) {
    (void)staging->enqueue_after(stream());  // frees what enqueue_before allocated
    co_return fail(std::move(enqueued.error()));
  }
  std::shared_ptr<NcclState> state = state_;
  if (*enqueued) {
    // The group is still being enqueued; the stream is NCCL's until it is done.
    auto enqueue_done = [state, what] { return state->progress(what); };
    Task<void> polling = poll_with_backoff(enqueue_done);
    Result<void> ready = co_await std::move(polling);
    if (!ready) co_return ready;
  }
  if (auto staged = staging->enqueue_after(stream()); !staged) co_return staged;
  RecordedEvent event;
  if (auto recorded = event.record(device(), stream()); !recorded) co_return recorded;
  turn.release();  // the next operation may enqueue behind this one now

  cudaEvent_t raw = event.get();
  auto finished = [state, what, raw]() -> std::optional<Result<void>> {
    const cudaError_t code = cudaEventQuery(raw);
    if (code == cudaSuccess) return Result<void>{};
    if (code != cudaErrorNotReady) return fail(cuda_error(code, "cudaEventQuery"));
    // Still running: a peer's failure shows up as the communicator's async error.
    auto state_now = state->progress(what);
    if (state_now && !*state_now) return state_now;
    return std::nullopt;
  };
  Task<void> completing = poll_with_backoff(finished);
  Result<void> completed = co_await std::move(completing);
  if (completed) staging->finish();
  co_return completed;
}

Task<void> NcclCommunicator::abort(const Error& why) {
  ncclComm_t comm = state_->take_for_abort(why);
  if (comm == nullptr) co_return Result<void>{};
  const int on = device();
  auto aborting = [comm, on] {
    (void)use_device(on);
    (void)ncclCommAbort(comm);  // stops NCCL's kernels and proxies: nothing writes into the buffers after
  };
  Task<void> stopping = runtime_.offload(aborting);
  co_return co_await std::move(stopping);
}

Task<void> NcclCommunicator::run(Plan plan) {
  const std::string operation = to_string(plan.kind);
  const std::string what = comm_detail::describe(plan, name_);
  if (auto broken = broken_error()) co_return fail(std::move(broken->with_rank(rank_).with_operation(operation)));
  ScopedSpan span(runtime_.tracer(), what, "comm", world_rank_);

  Result<void> result = co_await comm_detail::wait_injected_latency(options_.injected_latency);
  if (result) result = check(plan, what);
  auto staging = std::make_shared<HostStaging>(*resources_->bounces);
  if (result) {
    const bool receives = plan.kind != OpKind::gather_v || rank_ == plan.root;
    auto on_host = [](const void* pointer) { return !is_device_memory(pointer); };
    result = staging->prepare(plan, receives, on_host);
  }
  if (result) {
    std::shared_ptr<Ticket> ticket = state_->turns.enter();
    Task<void> body = execute(plan, what, ticket, staging);
    Task<void> bounded = with_deadline(std::move(body), options_.deadline, what);
    result = co_await std::move(bounded);
    if (!result && result.error().code == Errc::timeout) {
      Task<void> aborting = abort(result.error());
      (void)co_await std::move(aborting);
    }
  }
  if (!result) {
    result.error().with_rank(rank_).with_operation(operation);
    mark_broken(result.error());
  }
  co_return result;
}

Task<std::shared_ptr<Communicator>> NcclCommunicator::split(int color, int key) {
  const std::string what = "split on " + name_;
  if (auto broken = broken_error()) co_return fail(std::move(broken->with_rank(rank_).with_operation("split")));
  if (color < 0) {
    Error bad{Errc::invalid_argument, what + ": color " + std::to_string(color) + "; colors are >= 0",
              {.rank = rank_, .operation = "split"}, 0};
    mark_broken(bad);
    co_return fail(std::move(bad));
  }
  ScopedSpan span(runtime_.tracer(), what, "comm", world_rank_);
  Result<void> waited = co_await comm_detail::wait_injected_latency(options_.injected_latency);
  if (!waited) co_return fail(std::move(waited.error()));

  std::shared_ptr<Ticket> ticket = state_->turns.enter();
  Task<std::shared_ptr<Communicator>> body = split_in_turn(color, key, what, ticket);
  Task<std::shared_ptr<Communicator>> bounded = with_deadline(std::move(body), options_.deadline, what);
  Result<std::shared_ptr<Communicator>> made = co_await std::move(bounded);
  if (!made) {
    if (made.error().code == Errc::timeout) {
      Task<void> aborting = abort(made.error());
      (void)co_await std::move(aborting);
    }
    made.error().with_rank(rank_).with_operation("split");
    mark_broken(made.error());
  }
  co_return made;
}

Task<std::shared_ptr<Communicator>> NcclCommunicator::split_in_turn(int color, int key, std::string what,
                                                                    std::shared_ptr<Ticket> ticket) {
  TurnGuard turn(state_->turns, ticket);
  Task<void> turn_comes = state_->turns.wait_turn(ticket);
  if (Result<void> my_turn = co_await std::move(turn_comes); !my_turn) co_return fail(std::move(my_turn.error()));
  auto resources = make_resources(device());
  if (!resources) co_return fail(std::move(resources.error()));

  ncclComm_t child = nullptr;
  {
    std::lock_guard lock(state_->mutex);
    if (state_->comm == nullptr) co_return fail(Errc::unavailable, what + ": the communicator was aborted");
    if (auto ready = use_device(device()); !ready) co_return fail(ready.error());
    ncclConfig_t config = non_blocking_config();
    const ncclResult_t result = ncclCommSplit(state_->comm, color, key, &child, &config);
    if (result != ncclSuccess && result != ncclInProgress) {
      co_return fail(nccl_error(result, "ncclCommSplit", state_->comm));
    }
  }
  auto child_state = std::make_shared<NcclState>(child);
  std::shared_ptr<NcclState> parent = state_;
  // Both leave ncclInProgress once the split is done (the parent takes no new operation
  // before).
  auto split_done = [child_state, parent, what]() -> std::optional<Result<void>> {
    auto child_now = child_state->progress(what);
    if (!child_now || !*child_now) return child_now;
    return parent->progress(what);
  };
  Task<void> polling = poll_with_backoff(split_done);
  Result<void> ready = co_await std::move(polling);
  turn.release();
  if (!ready) {
    // Nobody else has the child: abort it in the background (this task may be cancelled).
    abort_in_background(runtime_, child_state->take_for_abort(ready.error()), device());
    co_return fail(std::move(ready.error()));
  }
  int child_rank = 0;
  int child_size = 0;
  {
    std::lock_guard lock(child_state->mutex);
    ncclResult_t result = ncclCommUserRank(child, &child_rank);
    if (result == ncclSuccess) result = ncclCommCount(child, &child_size);
    if (result != ncclSuccess) ready = fail(nccl_error(result, "ncclCommUserRank", child));
  }
  if (!ready) {
    abort_in_background(runtime_, child_state->take_for_abort(ready.error()), device());
    co_return fail(std::move(ready.error()));
  }
  std::string child_name = name_ + "/split(" + std::to_string(color) + ")";
  co_return make_nccl_communicator(runtime_, std::move(child_state), std::move(*resources), child_rank, child_size,
                                   std::move(child_name), options_, world_rank_);
}

std::optional<Error> NcclCommunicator::broken_error() const {
  std::lock_guard lock(state_->mutex);
  if (!state_->broken_because) return std::nullopt;
  const bool timed_out = state_->broken_because->code == Errc::timeout;
  return Error{Errc::unavailable,
               "communicator " + name_ + " is broken after an earlier " + (timed_out ? "timeout" : "failure") + " (" +
                   state_->broken_because->message + ")",
               {}, 0};
}

void NcclCommunicator::mark_broken(const Error& why) {
  std::lock_guard lock(state_->mutex);
  if (!state_->broken_because) state_->broken_because = why;
}

}  // namespace

std::shared_ptr<Communicator> make_nccl_communicator(Runtime& runtime, std::shared_ptr<NcclState> state,
                                                     std::unique_ptr<StreamResources> resources, int rank, int size,
                                                     std::string name, CommOptions options, int world_rank) {
  return std::make_shared<NcclCommunicator>(runtime, std::move(state), std::move(resources), rank, size,
                                            std::move(name), options, world_rank);
}

}  // namespace corockpt::nccl_detail
