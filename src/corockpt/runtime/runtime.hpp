#pragma once
/// @file
/// `Runtime`: one per process. An `asio::io_context` driven by its own thread runs every
/// coroutine; a worker pool runs blocking work (large copies, checksums, blocking
/// library calls). Ranks simulated in one process share it, each on its own strand, so
/// eight ranks do not mean eight busy threads.

#include <asio/bind_cancellation_slot.hpp>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/strand.hpp>
#include <asio/thread_pool.hpp>

#include <cstddef>
#include <memory>
#include <thread>
#include <type_traits>

#include "corockpt/runtime/completion.hpp"
#include "corockpt/runtime/task.hpp"
#include "corockpt/runtime/task_handle.hpp"
#include "corockpt/runtime/trace.hpp"

namespace corockpt {

namespace detail {
template <class R>
struct as_result { using type = Result<R>; };
template <class R>
struct as_result<Result<R>> { using type = Result<R>; };
/// The value type of what `offload(fn)` yields: `R` for an `fn` returning `R` or `Result<R>`.
template <class F>
using offload_value_t = typename as_result<std::invoke_result_t<F&>>::type::value_type;
}  // namespace detail

struct RuntimeOptions {
  /// Threads of the worker pool for blocking work; 0 means one per core.
  std::size_t worker_threads = 0;
};

/// Thread rules: every member may be called from any thread, concurrently; the
/// destructor from a thread that is neither the io thread nor a worker, once no other
/// thread uses the runtime. A coroutine runs on the executor it was spawned on: the
/// strand of its rank, so one rank's coroutines never run at the same time.
class Runtime {
 public:
  using Strand = asio::strand<asio::io_context::executor_type>;

  explicit Runtime(RuntimeOptions options = {});
  /// Stops the io_context and joins both the io thread and the workers. Tasks still
  /// suspended are destroyed without resuming.
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  asio::io_context::executor_type executor() { return io_.get_executor(); }
  /// A fresh strand on the io_context: the home of one simulated rank.
  Strand make_strand() { return asio::make_strand(io_); }
  asio::thread_pool& workers() { return workers_; }
  std::size_t worker_count() const { return worker_count_; }
  Tracer& tracer() { return tracer_; }
  /// True on the thread that runs the io_context.
  bool on_io_thread() const { return std::this_thread::get_id() == io_thread_id_; }

  /// Starts `task` on `executor` (the io_context by default, or a strand of it) and
  /// returns a handle synchronous code can poll, wait on and cancel.
  template <class T, class Executor>
  TaskHandle<T> spawn(Executor executor, Task<T> task) {
    auto state = std::make_shared<detail::TaskState<T>>();
    state->executor = executor;
    state->on_io_thread = [this] { return on_io_thread(); };
    auto slot = state->signal.slot();
    asio::co_spawn(executor,
                   detail::run_into(std::move(task), [state](Result<T> r) { state->finish(std::move(r)); }),
                   asio::bind_cancellation_slot(slot, asio::detached));
    return TaskHandle<T>(std::move(state));
  }
  template <class T>
  TaskHandle<T> spawn(Task<T> task) {
    return spawn(executor(), std::move(task));
  }

  /// Runs the blocking callable `fn` on the worker pool and resumes the awaiting
  /// coroutine on its own executor. `fn` returns a `Result<R>` or a plain `R`; an
  /// exception it throws becomes Errc::internal. Cancelling the await returns
  /// Errc::cancelled at once; `fn` itself runs to its end (it owns what it captured).
  template <class F>
  Task<detail::offload_value_t<F>> offload(F fn) {
    using R = detail::offload_value_t<F>;
    auto done = Completion<R>::make();
    // GCC 12 miscompiles an init-capture named like a parameter of the enclosing
    // coroutine (double destruction); captures in coroutines take other names.
    asio::post(workers_, [done, work = std::move(fn)]() mutable {
      try {
        if constexpr (std::is_void_v<std::invoke_result_t<F&>>) {
          work();
          done->complete(Result<R>{});
        } else {
          done->complete(work());
        }
      } catch (...) {
        done->complete(fail(error_from_exception(std::current_exception())));
      }
    });
    co_return co_await done->wait();
  }

 private:
  // Declared first, destroyed last: suspended tasks destroyed with the io_context may
  // still close their spans.
  Tracer tracer_;
  std::size_t worker_count_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  asio::thread_pool workers_;
  std::thread io_thread_;
  std::thread::id io_thread_id_;
};

}  // namespace corockpt
