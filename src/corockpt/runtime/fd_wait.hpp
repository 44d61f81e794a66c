#pragma once
/// @file
/// Awaiting readiness of a file descriptor (an eventfd, a pipe) on the io_context,
/// through epoll, without a thread blocked on it.

#include <asio/posix/stream_descriptor.hpp>

#include "corockpt/runtime/task.hpp"

namespace corockpt {

/// Watches a descriptor it does not own (it never closes it).
class FdWatcher {
 public:
  FdWatcher(asio::any_io_executor executor, int fd);
  ~FdWatcher();
  FdWatcher(const FdWatcher&) = delete;
  FdWatcher& operator=(const FdWatcher&) = delete;

  /// Completes when the descriptor is readable. No deadline of its own: wrap it in
  /// `with_deadline` when the writer is outside this process.
  /// @returns Errc::cancelled when cancelled, an Errc::io Error if epoll reports one.
  Task<void> readable();

 private:
  asio::posix::stream_descriptor descriptor_;
};

/// One-off form of `FdWatcher::readable` for the awaiting coroutine's executor.
Task<void> wait_readable(int fd);

}  // namespace corockpt
