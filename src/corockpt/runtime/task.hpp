#pragma once
/// @file
/// `Task<T>`: the coroutine type of corockpt, an `asio::awaitable` that yields a
/// `Result<T>`. It is an alias, not a second task type.

#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>

#include <memory>

#include "corockpt/runtime/completion.hpp"
#include "corockpt/runtime/error.hpp"

namespace corockpt {

template <class T>
using Task = asio::awaitable<Result<T>>;

namespace detail {

/// Runs `task` to its end and hands its result (or the exception it threw, as an
/// Error) to `sink`. Keeps exceptions from escaping into Asio's machinery.
template <class T, class Sink>
asio::awaitable<void> run_into(Task<T> task, Sink sink) {
  Result<T> result = fail(Errc::internal, "task produced no result");
  try {
    result = co_await std::move(task);
  } catch (...) {
    result = fail(error_from_exception(std::current_exception()));
  }
  sink(std::move(result));
}

}  // namespace detail
}  // namespace corockpt
