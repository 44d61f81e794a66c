#include "corockpt/plugins/comm/mpi/mpi_communicator.hpp"

#include <chrono>
#include <climits>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "corockpt/plugins/comm/detail/injected_latency.hpp"
#include "corockpt/plugins/comm/detail/planned_communicator.hpp"
#include "corockpt/plugins/comm/mpi/mpi_library.hpp"
#include "corockpt/plugins/comm/mpi/peer_processes.hpp"
#include "corockpt/plugins/comm/detail/mpi_progress.hpp"
#include "corockpt/runtime/deadline.hpp"
#include "corockpt/runtime/trace.hpp"

namespace corockpt {

namespace {

using comm_detail::OpKind;
using comm_detail::Plan;
using mpi_detail::lock_mpi;
using mpi_detail::mpi_error;
using mpi_detail::MpiOperation;
using mpi_detail::MpiProgress;
using mpi_detail::OwnedComm;
using WorldProcesses = std::shared_ptr<const std::vector<ProcessId>>;

std::string bytes(std::size_t n) { return std::to_string(n) + " bytes"; }

int as_int(std::size_t n) { return static_cast<int>(n); }

void copy_bytes(std::byte* to, std::span<const std::byte> from) {
  if (!from.empty()) std::memcpy(to, from.data(), from.size());
}

class MpiCommunicator final : public comm_detail::PlannedCommunicator {
 public:
  /// Takes ownership of `comm`. `processes`: every world rank's process, in world order.
  MpiCommunicator(Runtime& runtime, MPI_Comm comm, std::string name, CommOptions options, WorldProcesses processes)
      : runtime_(runtime), comm_(std::make_shared<const OwnedComm>(comm)), name_(std::move(name)),
        options_(options), processes_(std::move(processes)) {
    auto mpi = lock_mpi();
    MPI_Comm_rank(comm, &rank_);
    MPI_Comm_size(comm, &size_);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_);
    // The members' world ranks, to name a dead one after a timeout.
    MPI_Group group = MPI_GROUP_NULL, world_group = MPI_GROUP_NULL;
    MPI_Comm_group(comm, &group);
    MPI_Comm_group(MPI_COMM_WORLD, &world_group);
    std::vector<int> ranks(static_cast<std::size_t>(size_));
    for (int r = 0; r < size_; ++r) ranks[static_cast<std::size_t>(r)] = r;
    members_.resize(ranks.size());
    MPI_Group_translate_ranks(group, size_, ranks.data(), world_group, members_.data());
    MPI_Group_free(&group);
    MPI_Group_free(&world_group);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view backend() const override { return "mpi"; }
  MemorySpace memory_space() const override { return MemorySpace::host; }
  const std::string& name() const override { return name_; }

  Task<std::shared_ptr<Communicator>> split(int color, int key) override;

 private:
  Task<void> run(Plan plan) override;
  /// Checks the plan, stages the bytes and starts the MPI request.
  Result<std::shared_ptr<MpiOperation>> start(const Plan& plan, const std::string& what);
  /// Fills the operation's int counts and displacements. @returns the total.
  Result<std::size_t> set_counts(MpiOperation& op, std::span<const std::size_t> counts, const std::string& what);
  Result<std::shared_ptr<Communicator>> split_now(int color, int key);

  std::optional<Error> broken_error() const;
  void mark_broken(const Error& why);

  Runtime& runtime_;
  std::shared_ptr<const OwnedComm> comm_;  // shared with the requests pending on it
  const std::string name_;
  const CommOptions options_;
  int rank_ = 0;
  int size_ = 0;
  int world_rank_ = 0;
  const WorldProcesses processes_;
  std::vector<int> members_;  // world rank of each rank of this group

  mutable std::mutex broken_mutex_;  // ranks may issue from different strands
  std::optional<Error> broken_because_;
};

Task<void> MpiCommunicator::run(Plan plan) {
  const std::string operation = to_string(plan.kind);
  const std::string what = comm_detail::describe(plan, name_);
  if (auto broken = broken_error()) co_return fail(std::move(broken->with_rank(rank_).with_operation(operation)));
  ScopedSpan span(runtime_.tracer(), what, "comm", world_rank_);

  Result<void> result = co_await comm_detail::wait_injected_latency(options_.injected_latency);
  if (result) {
    auto started = start(plan, what);
    if (!started) {
      result = fail(std::move(started.error()));
    } else {
      MpiProgress::instance().watch(*started, runtime_.executor());
      Task<void> waiting = with_deadline((*started)->done->wait(), options_.deadline, what);
      result = co_await std::move(waiting);
      if (!result) {
        // Stopped waiting. If MPI finished just before, its result stands.
        if (auto finished = MpiProgress::instance().abandon(*started)) result = std::move(*finished);
      }
    }
  }
  if (!result) {
    if (processes_) {
      // MPI cannot say who did not arrive; a dead peer on this host can be named. After a
      // timeout the peers' state is always told; after another error (a dead peer's
      // broken connection, say) only when one has exited.
      const std::string peers = mpi_detail::describe_peers(*processes_, members_, world_rank_);
      const bool someone_exited = peers.find("exited") != std::string::npos;
      if (!peers.empty() && (result.error().code == Errc::timeout || someone_exited)) {
        result.error().message += "; " + peers;
      }
    }
    result.error().with_rank(rank_).with_operation(operation);
    mark_broken(result.error());
  }
  co_return result;
}

Result<std::size_t> MpiCommunicator::set_counts(MpiOperation& op, std::span<const std::size_t> counts,
                                                const std::string& what) {
  if (counts.size() != static_cast<std::size_t>(size_)) {
    return fail(Errc::invalid_argument,
                what + ": " + std::to_string(counts.size()) + " counts for " + std::to_string(size_) + " ranks");
  }
  std::size_t total = 0;
  for (std::size_t count : counts) {
    op.counts.push_back(as_int(count));
    op.displacements.push_back(as_int(total));
    total += count;
    if (total > INT_MAX) {
      return fail(Errc::invalid_argument, what + ": more than INT_MAX bytes in all (MPI counts are ints)");
    }
  }
  return total;
}

Result<std::shared_ptr<MpiOperation>> MpiCommunicator::start(const Plan& plan, const std::string& what) {
  auto op = std::make_shared<MpiOperation>();
  op->what = what;
  op->comm = comm_;
  const MPI_Comm comm = comm_->get();
  const auto ranks = static_cast<std::size_t>(size_);
  const auto me = static_cast<std::size_t>(rank_);
  auto invalid = [&what](const std::string& why) { return fail(Errc::invalid_argument, what + ": " + why); };
  auto sends_wrong = [me](const Plan& p) {
    return "sends " + bytes(p.send.size()) + " but its count is " + std::to_string(p.counts[me]);
  };
  if (auto addressed = comm_detail::check_addressing(plan, size_, what); !addressed) return fail(addressed.error());
  // One buffer's size as an MPI count (the v-collectives check their totals instead).
  const std::size_t one_buffer = plan.kind == OpKind::send ? plan.send.size() : plan.recv.size();
  if ((plan.kind == OpKind::broadcast || plan.kind == OpKind::send || plan.kind == OpKind::recv) &&
      one_buffer > INT_MAX) {
    return invalid(bytes(one_buffer) + " is more than INT_MAX (MPI counts are ints)");
  }

  auto mpi = lock_mpi();
  int code = MPI_SUCCESS;
  switch (plan.kind) {
    case OpKind::all_gather: {
      const std::size_t each = plan.send.size();
      if (plan.recv.size() != each * ranks) {
        return invalid("receives into " + bytes(plan.recv.size()) + ", needs " + bytes(each * ranks));
      }
      if (each > INT_MAX) return invalid(bytes(each) + " per rank is more than INT_MAX (MPI counts are ints)");
      std::byte* staging = op->stage(plan.recv.size());
      copy_bytes(staging + me * each, plan.send);
      op->result = {staging, plan.recv.size()};
      op->destination = plan.recv;
      code = MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, staging, as_int(each), MPI_BYTE, comm, &op->request);
      break;
    }
    case OpKind::all_gather_v: {
      auto total = set_counts(*op, plan.counts, what);
      if (!total) return fail(total.error());
      if (plan.send.size() != plan.counts[me]) return invalid(sends_wrong(plan));
      if (plan.recv.size() != *total) {
        return invalid("receives into " + bytes(plan.recv.size()) + ", needs " + bytes(*total));
      }
      std::byte* staging = op->stage(*total);
      copy_bytes(staging + op->displacements[me], plan.send);
      op->result = {staging, *total};
      op->destination = plan.recv;
      code = MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, staging, op->counts.data(), op->displacements.data(),
                             MPI_BYTE, comm, &op->request);
      break;
    }
    case OpKind::gather_v: {
      auto total = set_counts(*op, plan.counts, what);
      if (!total) return fail(total.error());
      if (plan.send.size() != plan.counts[me]) return invalid(sends_wrong(plan));
      if (rank_ == plan.root) {
        if (plan.recv.size() != *total) {
          return invalid("(the root) receives into " + bytes(plan.recv.size()) + ", needs " + bytes(*total));
        }
        std::byte* staging = op->stage(*total);
        copy_bytes(staging + op->displacements[me], plan.send);  // in place, where MPI expects the root's part
        op->result = {staging, *total};
        op->destination = plan.recv;
        code = MPI_Igatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, staging, op->counts.data(), op->displacements.data(),
                            MPI_BYTE, plan.root, comm, &op->request);
      } else {
        std::byte* staging = op->stage(plan.send.size());
        copy_bytes(staging, plan.send);
        code = MPI_Igatherv(staging, as_int(plan.send.size()), MPI_BYTE, nullptr, nullptr, nullptr, MPI_BYTE,
                            plan.root, comm, &op->request);
      }
      break;
    }
    case OpKind::broadcast: {
      std::byte* staging = op->stage(plan.recv.size());
      if (rank_ == plan.root) {
        copy_bytes(staging, plan.recv);
      } else {
        op->result = {staging, plan.recv.size()};
        op->destination = plan.recv;
      }
      code = MPI_Ibcast(staging, as_int(plan.recv.size()), MPI_BYTE, plan.root, comm, &op->request);
      break;
    }
    case OpKind::barrier:
    case OpKind::split:  // the agreement before MPI_Comm_split
      code = MPI_Ibarrier(comm, &op->request);
      break;
    case OpKind::exchange:  // Communicator::exchange's sends and recvs, never a Plan here
      return fail(Errc::internal, what + ": not an operation of this backend");
    case OpKind::send: {
      std::byte* staging = op->stage(plan.send.size());
      copy_bytes(staging, plan.send);
      code = MPI_Isend(staging, as_int(plan.send.size()), MPI_BYTE, plan.peer, plan.tag, comm, &op->request);
      break;
    }
    case OpKind::recv: {
      std::byte* staging = op->stage(plan.recv.size());
      op->result = {staging, plan.recv.size()};
      op->destination = plan.recv;
      op->expected_bytes = plan.recv.size();
      code = MPI_Irecv(staging, as_int(plan.recv.size()), MPI_BYTE, plan.peer, plan.tag, comm, &op->request);
      break;
    }
  }
  if (code != MPI_SUCCESS) return fail(mpi_error(code, what));
  return op;
}

Task<std::shared_ptr<Communicator>> MpiCommunicator::split(int color, int key) {
  if (color < 0) {
    Error bad{Errc::invalid_argument, "split on " + name_ + ": color " + std::to_string(color) + "; colors are >= 0",
              {.rank = rank_, .operation = "split"}, 0};
    mark_broken(bad);
    co_return fail(std::move(bad));
  }
  // Everyone arrives (within the deadline) before anyone enters the blocking split.
  Task<void> agreeing = run({.kind = OpKind::split});
  Result<void> agreed = co_await std::move(agreeing);
  if (!agreed) co_return fail(std::move(agreed.error()));
  co_return split_now(color, key);
}

Result<std::shared_ptr<Communicator>> MpiCommunicator::split_now(int color, int key) {
  const std::string what = "split on " + name_;
  MPI_Comm made = MPI_COMM_NULL;
  int code = MPI_SUCCESS;
  {
    auto mpi = lock_mpi();
    code = MPI_Comm_split(comm_->get(), color, key, &made);
    if (code == MPI_SUCCESS) code = MPI_Comm_set_errhandler(made, MPI_ERRORS_RETURN);
  }
  if (code != MPI_SUCCESS) {
    Error error = mpi_error(code, what).with_rank(rank_).with_operation("split");
    mark_broken(error);
    return fail(std::move(error));
  }
  return std::make_shared<MpiCommunicator>(runtime_, made, name_ + "/split(" + std::to_string(color) + ")", options_,
                                           processes_);
}

std::optional<Error> MpiCommunicator::broken_error() const {
  std::lock_guard lock(broken_mutex_);
  if (!broken_because_) return std::nullopt;
  const bool timed_out = broken_because_->code == Errc::timeout;
  return Error{Errc::unavailable,
               "communicator " + name_ + " is broken after an earlier " + (timed_out ? "timeout" : "failure") + " (" +
                   broken_because_->message + ")",
               {}, 0};
}

void MpiCommunicator::mark_broken(const Error& why) {
  std::lock_guard lock(broken_mutex_);
  if (!broken_because_) broken_because_ = why;
}

}  // namespace

namespace {

// Polls `request` until it completes or `give_up_at` passes (the request then stays with
// MPI, which must own every buffer in it).
Result<void> wait_until(MPI_Request& request, std::chrono::steady_clock::time_point give_up_at,
                        const std::string& what, const std::string& late) {
  auto pause = std::chrono::microseconds(20);
  for (;;) {
    int done = 0;
    int code = MPI_SUCCESS;
    {
      auto mpi = lock_mpi();
      code = MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    }
    if (code != MPI_SUCCESS) return fail(mpi_error(code, what).with_operation(what));
    if (done) return {};
    if (std::chrono::steady_clock::now() >= give_up_at) return fail(Errc::timeout, what + ": " + late, {.operation = what});
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(2000));
  }
}

}  // namespace

Result<std::shared_ptr<Communicator>> make_mpi_world(Runtime& runtime, CommOptions options) {
  const std::string what = "make_mpi_world";
  const auto give_up_at = std::chrono::steady_clock::now() + options.deadline;
  const std::string late = "the other processes did not join within " + std::to_string(options.deadline.count()) + " ms";
  MPI_Comm world = MPI_COMM_NULL;
  MPI_Request joining = MPI_REQUEST_NULL;
  {
    auto mpi = lock_mpi();
    if (auto ready = mpi_detail::ensure_initialized(options.deadline); !ready) return fail(ready.error());
    // A duplicate of the world, joined without blocking so that the deadline holds.
    int code = MPI_Comm_idup(MPI_COMM_WORLD, &world, &joining);
    if (code != MPI_SUCCESS) return fail(mpi_error(code, what).with_operation(what));
  }
  if (auto joined = wait_until(joining, give_up_at, what, late); !joined) return fail(joined.error());
  // Every rank's process, for naming a dead peer after a timeout. What MPI reads and
  // writes is left to it (leaked) if the gather times out.
  struct Gathering {
    ProcessId me = this_process_id();
    std::vector<ProcessId> all;
  };
  auto gathering = std::make_unique<Gathering>();
  MPI_Request request = MPI_REQUEST_NULL;
  {
    auto mpi = lock_mpi();
    int code = MPI_Comm_set_errhandler(world, MPI_ERRORS_RETURN);
    int size = 0;
    if (code == MPI_SUCCESS) code = MPI_Comm_size(world, &size);
    gathering->all.resize(static_cast<std::size_t>(size));
    if (code == MPI_SUCCESS) {
      code = MPI_Iallgather(&gathering->me, sizeof(ProcessId), MPI_BYTE, gathering->all.data(), sizeof(ProcessId),
                            MPI_BYTE, world, &request);
    }
    if (code != MPI_SUCCESS) return fail(mpi_error(code, what).with_operation(what));
  }
  if (auto gathered = wait_until(request, give_up_at, what, late); !gathered) {
    gathering.release();
    return fail(gathered.error());
  }
  auto processes = std::make_shared<const std::vector<ProcessId>>(std::move(gathering->all));
  return std::shared_ptr<Communicator>(
      std::make_shared<MpiCommunicator>(runtime, world, "world", options, std::move(processes)));
}

Result<void> finalize_mpi(std::chrono::milliseconds deadline) {
  // Test the abandoned requests one last time: those that completed free their staging.
  MpiProgress::instance().abandoned_pending();
  Result<void> done;
  {
    auto mpi = lock_mpi();
    done = mpi_detail::finalize(deadline);
  }
  if (done) MpiProgress::instance().forget_abandoned();
  return done;
}

}  // namespace corockpt
