#pragma once
/// @file
/// `TurnQueue`: one user at a time, in the order they took their place. The nccl
/// communicator serializes its enqueues with it: a non-blocking NCCL communicator takes
/// no new operation while one is still being enqueued, and the order operations enter the
/// queue is the order NCCL sees them, which every rank must share.
///
/// A place is taken at once (`enter`), the turn awaited later (`wait_turn`), and given up
/// by the `TurnGuard` that holds it, whether the turn came or the wait was stopped (a
/// deadline): a waiter that gives up never blocks the ones behind it. Thread-safe.

#include <deque>
#include <memory>
#include <mutex>

#include "corockpt/runtime/completion.hpp"
#include "corockpt/runtime/task.hpp"

namespace corockpt::comm_detail {

class TurnQueue {
 public:
  /// A place in the queue.
  struct Ticket {
    std::shared_ptr<Completion<void>> granted_signal = Completion<void>::make();
    bool granted = false;    // guarded by the queue's mutex
    bool abandoned = false;  // guarded by the queue's mutex
  };

  /// Takes the next place: the turn now if nobody holds it, else after everyone before.
  std::shared_ptr<Ticket> enter();

  /// Waits until `ticket` holds the turn. @returns Errc::cancelled when the wait is
  /// stopped: the ticket's guard then gives the place up.
  Task<void> wait_turn(std::shared_ptr<Ticket> ticket);

  /// Gives the turn up to the next place still waited for, or the place itself if the turn
  /// never came (it is skipped when its turn would come).
  void leave(Ticket& ticket);

 private:
  std::mutex mutex_;
  bool taken_ = false;  // some ticket holds the turn
  std::deque<std::shared_ptr<Ticket>> waiting_;
};

/// Holds a ticket for the life of one use; gives the turn (or the place) up when released
/// or destroyed.
class TurnGuard {
 public:
  TurnGuard(TurnQueue& queue, std::shared_ptr<TurnQueue::Ticket> ticket) : queue_(&queue), ticket_(std::move(ticket)) {}
  ~TurnGuard() { release(); }
  TurnGuard(const TurnGuard&) = delete;
  TurnGuard& operator=(const TurnGuard&) = delete;

  void release() {
    if (queue_ != nullptr) queue_->leave(*ticket_);
    queue_ = nullptr;
  }

 private:
  TurnQueue* queue_;
  std::shared_ptr<TurnQueue::Ticket> ticket_;
};

}  // namespace corockpt::comm_detail
