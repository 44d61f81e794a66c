#include "corockpt/plugins/comm/detail/turn_queue.hpp"

#include <utility>

namespace corockpt::comm_detail {

std::shared_ptr<TurnQueue::Ticket> TurnQueue::enter() {
  auto ticket = std::make_shared<Ticket>();
  std::lock_guard lock(mutex_);
  if (!taken_) {
    taken_ = true;
    ticket->granted = true;
  } else {
    waiting_.push_back(ticket);
  }
  return ticket;
}

Task<void> TurnQueue::wait_turn(std::shared_ptr<Ticket> ticket) {
  bool granted = false;
  {
    std::lock_guard lock(mutex_);
    granted = ticket->granted;
  }
  if (granted) co_return Result<void>{};
  Task<void> waiting = ticket->granted_signal->wait();
  co_return co_await std::move(waiting);
}

void TurnQueue::leave(Ticket& ticket) {
  std::shared_ptr<Completion<void>> next_signal;
  {
    std::lock_guard lock(mutex_);
    if (!ticket.granted) {
      ticket.abandoned = true;
      return;
    }
    ticket.granted = false;
    while (!waiting_.empty()) {
      auto next = std::move(waiting_.front());
      waiting_.pop_front();
      if (next->abandoned) continue;
      next->granted = true;
      next_signal = next->granted_signal;
      break;
    }
    if (!next_signal) taken_ = false;
  }
  // If its waiter already gave up, the completion refuses this; that waiter's guard then
  // passes the turn on, having `granted` set.
  if (next_signal) next_signal->complete(Result<void>{});
}

}  // namespace corockpt::comm_detail
