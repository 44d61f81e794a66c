#include "corockpt/plugins/comm/local/local_communicator.hpp"

#include <numeric>

#include "corockpt/plugins/comm/detail/injected_latency.hpp"
#include "corockpt/plugins/comm/local/local_collectives.hpp"
#include "corockpt/plugins/comm/local/local_group.hpp"
#include "corockpt/runtime/deadline.hpp"
#include "corockpt/runtime/trace.hpp"

namespace corockpt {

namespace {

using local_comm::CollectiveKind;
using local_comm::Contribution;
using local_comm::LocalGroup;
using local_comm::SplitOutcome;

constexpr int max_tag = 32767;

// The errors that mean "this rank stopped waiting": the group cannot go on without it.
bool gave_up(const Error& error) { return error.code == Errc::timeout || error.code == Errc::cancelled; }

class LocalCommunicator final : public Communicator {
 public:
  LocalCommunicator(Runtime& runtime, std::shared_ptr<LocalGroup> group, int rank, CommOptions options)
      : runtime_(runtime), group_(std::move(group)), rank_(rank), options_(options) {}

  int rank() const override { return rank_; }
  int size() const override { return group_->size(); }
  std::string_view backend() const override { return "local"; }
  MemorySpace memory_space() const override { return MemorySpace::host; }
  const std::string& name() const override { return group_->name(); }

  // The operations describe themselves and hand over to one coroutine that runs them
  // all (plain functions: GCC 12 and coroutines, see README).
  Task<void> all_gather(std::span<const std::byte> send, std::span<std::byte> recv) override {
    return collective({.kind = CollectiveKind::all_gather, .send = send, .recv = recv});
  }
  Task<void> all_gather_v(std::span<const std::byte> send, std::span<std::byte> recv,
                          std::span<const std::size_t> counts) override {
    return collective({.kind = CollectiveKind::all_gather_v, .send = send, .recv = recv, .counts = counts});
  }
  Task<void> gather_v(std::span<const std::byte> send, std::span<std::byte> recv, std::span<const std::size_t> counts,
                      int root) override {
    return collective(
        {.kind = CollectiveKind::gather_v, .send = send, .recv = recv, .counts = counts, .root = root});
  }
  Task<void> broadcast(std::span<std::byte> data, int root) override {
    return collective({.kind = CollectiveKind::broadcast, .recv = data, .root = root});
  }
  Task<void> barrier() override { return collective({.kind = CollectiveKind::barrier}); }

  Task<void> send(std::span<const std::byte> data, int peer, int tag) override {
    return transfer(data, {}, true, peer, tag);
  }
  Task<void> recv(std::span<std::byte> data, int peer, int tag) override {
    return transfer({}, data, false, peer, tag);
  }

  Task<std::shared_ptr<Communicator>> split(int color, int key) override;

 private:
  Task<void> collective(Contribution contribution);
  Task<void> transfer(std::span<const std::byte> outgoing, std::span<std::byte> incoming, bool sending, int peer,
                      int tag);

  Runtime& runtime_;
  std::shared_ptr<LocalGroup> group_;
  int rank_;
  CommOptions options_;
};

Task<void> LocalCommunicator::collective(Contribution contribution) {
  const std::string operation(to_string(contribution.kind));
  const std::string what = operation + " on " + name();
  auto sequence = group_->next_sequence(rank_);
  if (!sequence) co_return fail(std::move(sequence.error().with_rank(rank_).with_operation(operation)));
  ScopedSpan span(runtime_.tracer(), what, "comm", group_->world_rank(rank_));

  Result<void> result = co_await comm_detail::wait_injected_latency(options_.injected_latency);
  if (result) {
    auto done = Completion<void>::make();
    contribution.done = done;
    group_->arrive(*sequence, rank_, std::move(contribution));
    Task<void> waiting = with_deadline(done->wait(), options_.deadline, what);
    result = co_await std::move(waiting);
  }
  if (!result && gave_up(result.error())) result = fail(group_->give_up(*sequence, rank_, std::move(result.error())));
  if (!result) result.error().with_rank(rank_).with_operation(operation);
  co_return result;
}

Task<void> LocalCommunicator::transfer(std::span<const std::byte> outgoing, std::span<std::byte> incoming,
                                       bool sending, int peer, int tag) {
  const std::string operation = sending ? "send" : "recv";
  const std::string what = operation + " on " + name() + (sending ? " to rank " : " from rank ") +
                           std::to_string(peer) + " (tag " + std::to_string(tag) + ")";
  const ErrorContext context{.rank = rank_, .operation = operation};
  if (peer < 0 || peer >= size()) {
    co_return fail(Errc::invalid_argument, what + ": no such rank in a group of " + std::to_string(size()), context);
  }
  if (tag < 0 || tag > max_tag) {
    co_return fail(Errc::invalid_argument, what + ": tags are 0.." + std::to_string(max_tag), context);
  }
  ScopedSpan span(runtime_.tracer(), what, "comm", group_->world_rank(rank_));

  std::uint64_t id = 0;
  Result<void> result = co_await comm_detail::wait_injected_latency(options_.injected_latency);
  if (result) {
    auto done = Completion<void>::make();
    id = sending ? group_->post_send(rank_, peer, tag, outgoing, done)
                 : group_->post_recv(peer, rank_, tag, incoming, done);
    Task<void> waiting = with_deadline(done->wait(), options_.deadline, what);
    result = co_await std::move(waiting);
  }
  if (!result && gave_up(result.error())) result = fail(group_->give_up_transfer(id, std::move(result.error())));
  if (!result) result.error().with_rank(rank_).with_operation(operation);
  co_return result;
}

Task<std::shared_ptr<Communicator>> LocalCommunicator::split(int color, int key) {
  SplitOutcome outcome;  // written at the rendezvous, while this frame waits in it
  Contribution part{.kind = CollectiveKind::split, .color = color, .key = key, .split_outcome = &outcome};
  Task<void> agreeing = collective(std::move(part));
  Result<void> agreed = co_await std::move(agreeing);
  if (!agreed) co_return fail(std::move(agreed.error()));
  co_return std::shared_ptr<Communicator>(
      std::make_shared<LocalCommunicator>(runtime_, std::move(outcome.group), outcome.rank, options_));
}

}  // namespace

Result<std::vector<std::shared_ptr<Communicator>>> make_local_world(Runtime& runtime, int world_size,
                                                                    CommOptions options) {
  if (world_size < 1) {
    return fail(Errc::invalid_argument, "a local world needs at least one rank, not " + std::to_string(world_size),
                {.operation = "make_local_world"});
  }
  std::vector<int> world_ranks(static_cast<std::size_t>(world_size));
  std::iota(world_ranks.begin(), world_ranks.end(), 0);
  auto group = std::make_shared<LocalGroup>("world", std::move(world_ranks));
  std::vector<std::shared_ptr<Communicator>> ranks;
  for (int r = 0; r < world_size; ++r) ranks.push_back(std::make_shared<LocalCommunicator>(runtime, group, r, options));
  return ranks;
}

}  // namespace corockpt
