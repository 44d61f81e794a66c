#pragma once
/// @file
/// `Completion<T>`: a one-shot slot that one coroutine awaits and any thread fills.
/// It is how work finishing elsewhere (the worker pool, an io_uring completion, a
/// returned staging buffer, a CUDA event) resumes a coroutine on its own executor.

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/post.hpp>
#include <asio/use_awaitable.hpp>

#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "corockpt/runtime/error.hpp"

namespace corockpt {

template <class T>
class Completion : public std::enable_shared_from_this<Completion<T>> {
 public:
  static std::shared_ptr<Completion> make() { return std::shared_ptr<Completion>(new Completion()); }

  /// Delivers the result to the waiter (now or when it starts waiting). Thread-safe.
  /// @returns false when a result or a cancellation was delivered before; `value` is dropped.
  bool complete(Result<T> value) {
    std::unique_lock lock(mutex_);
    if (done_) return false;
    done_ = true;
    if (waiter_) {
      auto waiter = std::move(waiter_);
      lock.unlock();
      waiter(std::move(value));
    } else {
      value_.emplace(std::move(value));
    }
    return true;
  }

  bool is_complete() const {
    std::lock_guard lock(mutex_);
    return done_;
  }

  /// Waits for the result; the handler runs on its associated executor (the awaiting
  /// coroutine's strand). Cancelling the wait delivers `Errc::cancelled` at once; the
  /// work that would have completed it is not stopped by that. One waiter only.
  template <class Token>
  auto async_wait(Token&& token) {
    return asio::async_initiate<Token, void(Result<T>)>(
        [self = this->shared_from_this()](auto handler) { self->start_wait(std::move(handler)); },
        token);
  }

  asio::awaitable<Result<T>> wait() { co_return co_await async_wait(asio::use_awaitable); }

 private:
  Completion() = default;

  template <class Handler>
  void start_wait(Handler handler) {
    auto executor = asio::get_associated_executor(handler);
    auto slot = asio::get_associated_cancellation_slot(handler);
    std::unique_lock lock(mutex_);
    if (value_) {
      Result<T> value = std::move(*value_);
      value_.reset();
      lock.unlock();
      deliver(executor, std::move(handler), std::move(value));
      return;
    }
    if (slot.is_connected()) {
      slot.assign([weak = this->weak_from_this()](asio::cancellation_type) {
        if (auto self = weak.lock()) self->complete(fail(Errc::cancelled, "wait cancelled"));
      });
    }
    waiter_ = [executor, h = std::move(handler)](Result<T> value) mutable {
      deliver(executor, std::move(h), std::move(value));
    };
  }

  template <class Executor, class Handler>
  static void deliver(const Executor& executor, Handler handler, Result<T> value) {
    asio::post(executor, [h = std::move(handler), v = std::move(value)]() mutable {
      std::move(h)(std::move(v));
    });
  }

  mutable std::mutex mutex_;
  bool done_ = false;
  std::optional<Result<T>> value_;
  std::move_only_function<void(Result<T>)> waiter_;
};

}  // namespace corockpt
