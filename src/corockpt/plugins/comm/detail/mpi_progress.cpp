#include "corockpt/plugins/comm/detail/mpi_progress.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/post.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <iterator>

#include "corockpt/plugins/comm/detail/backoff.hpp"

namespace corockpt::mpi_detail {

namespace {

using comm_detail::Backoff;

// Moves the operations whose request MPI has completed (and freed) to `finished`.
void move_completed(MpiProgress::Operations& operations, MpiProgress::Operations& finished) {
  auto done = std::stable_partition(operations.begin(), operations.end(),
                                    [](const auto& op) { return op->request != MPI_REQUEST_NULL; });
  std::move(done, operations.end(), std::back_inserter(finished));
  operations.erase(done, operations.end());
}

}  // namespace

std::byte* MpiOperation::stage(std::size_t bytes) {
  staging = std::make_unique_for_overwrite<std::byte[]>(bytes);
  return staging.get();
}

MpiProgress& MpiProgress::instance() {
  // Never destroyed: requests abandoned to MPI keep their staging here until exit.
  static auto* progress = new MpiProgress();
  return *progress;
}

void MpiProgress::watch(std::shared_ptr<MpiOperation> operation, asio::any_io_executor executor) {
  {
    std::lock_guard lock(mutex_);
    watched_.push_back(std::move(operation));
    if (running_) {
      wake_up();  // it may be sleeping its longest pause; a new request deserves a quick look
      return;
    }
    running_ = true;
    loop_executor_ = executor;
  }
  // Outside the lock: on the io thread co_spawn starts the loop right here, and the loop
  // takes the lock.
  asio::co_spawn(executor, poll_loop(), asio::detached);
}

std::optional<Result<void>> MpiProgress::abandon(const std::shared_ptr<MpiOperation>& operation) {
  std::lock_guard lock(mutex_);
  if (operation->outcome) return operation->outcome;
  operation->abandoned = true;
  auto it = std::find(watched_.begin(), watched_.end(), operation);
  if (it != watched_.end()) {
    watched_.erase(it);
    abandoned_.push_back(operation);
  }
  return std::nullopt;
}

std::size_t MpiProgress::abandoned_pending() {
  Operations finished;  // destroyed after the locks are released
  std::lock_guard lock(mutex_);
  auto mpi = lock_mpi();
  if (abandoned_.empty() || finalized()) return abandoned_.size();
  for (auto& op : abandoned_) {
    int flag = 0;
    MPI_Test(&op->request, &flag, MPI_STATUS_IGNORE);  // sets it to MPI_REQUEST_NULL when complete
  }
  move_completed(abandoned_, finished);
  return abandoned_.size();
}

void MpiProgress::forget_abandoned() {
  Operations finished;
  std::lock_guard lock(mutex_);
  finished.swap(abandoned_);
}

void MpiProgress::wake_up() {
  asio::post(loop_executor_, [this] {
    std::lock_guard lock(mutex_);
    if (sleeping_on_) sleeping_on_->cancel();
  });
}

asio::awaitable<void> MpiProgress::poll_loop() {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  // If the runtime is destroyed while requests are in flight, this frame is destroyed
  // without resuming: the guard lets the next watch start a fresh loop.
  struct Guard {
    MpiProgress& progress;
    asio::steady_timer* timer;
    bool ended_normally = false;
    ~Guard() {
      std::lock_guard lock(progress.mutex_);
      if (progress.sleeping_on_ == timer) progress.sleeping_on_ = nullptr;
      if (!ended_normally) progress.running_ = false;
    }
  } guard{*this, &timer};
  {
    std::lock_guard lock(mutex_);
    sleeping_on_ = &timer;
  }

  Backoff backoff;
  for (;;) {
    Operations finished;
    const Round round = poll_once(finished);
    finished.clear();
    if (!round.keep_going) {
      guard.ended_normally = true;  // poll_once cleared running_ under the lock
      co_return;
    }
    if (round.progressed) backoff.reset();
    timer.expires_after(backoff.next());
    auto [ec] = co_await timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) backoff.reset();  // woken up by a new request
  }
}

MpiProgress::Round MpiProgress::poll_once(Operations& finished) {
  std::lock_guard lock(mutex_);
  auto mpi = lock_mpi();
  if (watched_.empty() || finalized()) {
    running_ = false;
    return {};
  }
  // One array: the watched requests first, then the abandoned ones.
  std::vector<MpiOperation*> operations;
  for (auto& op : watched_) operations.push_back(op.get());
  for (auto& op : abandoned_) operations.push_back(op.get());
  std::vector<MPI_Request> requests;
  for (auto* op : operations) requests.push_back(op->request);
  std::vector<int> indices(requests.size());
  std::vector<MPI_Status> statuses(requests.size());
  int completed = 0;
  const int code = MPI_Testsome(static_cast<int>(requests.size()), requests.data(), &completed, indices.data(),
                                statuses.data());

  if (code != MPI_SUCCESS && code != MPI_ERR_IN_STATUS) {
    // MPI failed as a whole: nothing watched can be trusted to complete any more.
    for (auto& op : watched_) {
      op->outcome = fail(mpi_error(code, op->what));
      op->done->complete(*op->outcome);
    }
    std::move(watched_.begin(), watched_.end(), std::back_inserter(finished));
    watched_.clear();
    running_ = false;
    return {};
  }
  if (completed == MPI_UNDEFINED) completed = 0;  // only when every request is inactive
  for (int k = 0; k < completed; ++k) {
    MpiOperation& op = *operations[static_cast<std::size_t>(indices[static_cast<std::size_t>(k)])];
    op.request = MPI_REQUEST_NULL;  // MPI has freed it
    const MPI_Status& status = statuses[static_cast<std::size_t>(k)];
    finish(op, code == MPI_ERR_IN_STATUS ? status.MPI_ERROR : MPI_SUCCESS, status);
  }
  move_completed(watched_, finished);
  move_completed(abandoned_, finished);
  const bool keep_going = !watched_.empty();
  if (!keep_going) running_ = false;
  return {.progressed = completed > 0, .keep_going = keep_going};
}

void MpiProgress::finish(MpiOperation& op, int error, const MPI_Status& status) {
  if (op.abandoned) return;  // nobody waits for it, and its caller's buffers are off limits
  Result<void> outcome{};
  if (error != MPI_SUCCESS) {
    outcome = fail(mpi_error(error, op.what));
  } else if (op.expected_bytes) {
    int count = 0;
    MPI_Get_count(&status, MPI_BYTE, &count);
    if (static_cast<std::size_t>(count) != *op.expected_bytes) {
      outcome = fail(Errc::invalid_argument, op.what + ": the message has " + std::to_string(count) +
                                                 " bytes, the recv expected " + std::to_string(*op.expected_bytes));
    }
  }
  if (outcome && !op.result.empty()) std::memcpy(op.destination.data(), op.result.data(), op.result.size());
  op.outcome = outcome;
  op.done->complete(std::move(outcome));
}

}  // namespace corockpt::mpi_detail
