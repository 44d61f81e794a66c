#include "corockpt/runtime/fd_wait.hpp"

#include <asio/experimental/as_tuple.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

namespace corockpt {

FdWatcher::FdWatcher(asio::any_io_executor executor, int fd) : descriptor_(std::move(executor), fd) {}

FdWatcher::~FdWatcher() {
  descriptor_.release();  // deregister from epoll without closing what we don't own
}

Task<void> FdWatcher::readable() {
  auto [ec] = co_await descriptor_.async_wait(asio::posix::descriptor_base::wait_read,
                                             asio::experimental::as_tuple(asio::use_awaitable));
  if (ec == asio::error::operation_aborted) co_return fail(Errc::cancelled, "wait for readability cancelled");
  if (ec) co_return fail(Errc::io, ec.message(), ErrorContext{.operation = "wait_readable"});
  co_return Result<void>{};
}

Task<void> wait_readable(int fd) {
  FdWatcher watcher(co_await asio::this_coro::executor, fd);
  co_return co_await watcher.readable();
}

}  // namespace corockpt
