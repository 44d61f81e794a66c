#include "python_channel.hpp"

#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <asio/post.hpp>
#include <asio/thread_pool.hpp>

#include <cstring>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "corockpt/runtime/completion.hpp"
#include "corockpt/runtime/deadline.hpp"

namespace nb = nanobind;

namespace corockpt::python {

using comm_detail::OpKind;
using comm_detail::Plan;

struct PythonChannel::Shared {
  nb::object channel;  // used with the GIL only
  asio::thread_pool thread{1};
  std::mutex mutex;
  std::optional<Error> broken;  // guarded by mutex

  ~Shared() {
    thread.join();  // already joined by ~PythonChannel: a no-op
    if (Py_IsInitialized() != 0) {
      nb::gil_scoped_acquire gil;
      channel.reset();
    } else {
      channel.release();  // the interpreter is gone: nothing to give the reference back to
    }
  }
};

namespace {

/// One operation on its way to Python and back; owned by the operation, so a caller that
/// stopped waiting is never written to.
struct PythonOp {
  OpKind kind = OpKind::barrier;
  std::string send;
  std::vector<std::size_t> counts;
  int root = 0;
  std::size_t expected = 0;  // bytes of the result on this rank
  std::string result;
  std::shared_ptr<Completion<void>> done = Completion<void>::make();
};

std::string bytes_of(nb::handle value) {
  nb::bytes bytes = nb::cast<nb::bytes>(value);
  return std::string(bytes.c_str(), bytes.size());
}

/// Calls the channel's method for `op` (with the GIL held).
void call_python(nb::object& channel, PythonOp& op) {
  nb::bytes send(op.send.data(), op.send.size());
  switch (op.kind) {
    case OpKind::all_gather:
      op.result = bytes_of(channel.attr("all_gather")(send));
      break;
    case OpKind::all_gather_v:
      op.result = bytes_of(channel.attr("all_gather_v")(send, op.counts));
      break;
    case OpKind::gather_v:
      op.result = bytes_of(channel.attr("gather_v")(send, op.counts, op.root));
      break;
    case OpKind::broadcast:
      op.result = bytes_of(channel.attr("broadcast")(send, op.expected, op.root));
      break;
    case OpKind::barrier:
      channel.attr("barrier")();
      break;
    default:
      break;
  }
}

}  // namespace

PythonChannel::PythonChannel(nb::object channel, int rank, int size, std::chrono::milliseconds deadline)
    : shared_(std::make_shared<Shared>()), rank_(rank), size_(size), deadline_(deadline) {
  shared_->channel = std::move(channel);
}

PythonChannel::~PythonChannel() {
  // Every operation still queued ends first (gloo's timeout bounds one that waits for a
  // peer), here on the owner's thread: each holds the shared state, and the last holder
  // must not be the channel's own thread, which cannot join itself.
  shared_->thread.join();
}

Task<std::shared_ptr<Communicator>> PythonChannel::split(int, int) {
  co_return fail(Errc::unavailable, "the Python channel does not split");
}

Task<void> PythonChannel::exchange(std::span<const std::byte>, std::span<const std::size_t>, std::span<std::byte>,
                                   std::span<const std::size_t>, int) {
  co_return fail(Errc::unavailable, "the Python channel does not exchange");
}

Task<void> PythonChannel::run(Plan plan) {
  const std::string what = comm_detail::describe(plan, name_);
  if (auto ok = comm_detail::check_addressing(plan, size_, what); !ok) co_return ok;
  {
    std::lock_guard lock(shared_->mutex);
    if (shared_->broken) {
      co_return fail(Errc::unavailable,
                     what + ": the channel is broken after an earlier failure (" + shared_->broken->message + ")",
                     {.rank = rank_, .operation = to_string(plan.kind)});
    }
  }
  auto op = std::make_shared<PythonOp>();
  op->kind = plan.kind;
  op->root = plan.root;
  op->counts.assign(plan.counts.begin(), plan.counts.end());
  // A broadcast's data is in `recv` (in and out); only its root sends.
  const std::span<const std::byte> sent =
      plan.kind == OpKind::broadcast ? std::span<const std::byte>(plan.recv) : plan.send;
  if (plan.kind != OpKind::broadcast || rank_ == plan.root) {
    op->send.assign(reinterpret_cast<const char*>(sent.data()), sent.size());
  }
  switch (plan.kind) {
    case OpKind::all_gather:
    case OpKind::all_gather_v:
    case OpKind::broadcast:
      op->expected = plan.recv.size();
      break;
    case OpKind::gather_v:
      op->expected = rank_ == plan.root ? plan.recv.size() : 0;
      break;
    case OpKind::barrier:
      break;
    default:
      co_return fail(Errc::unavailable, what + ": the Python channel carries only gathers, broadcasts and barriers");
  }

  asio::post(shared_->thread, [shared = shared_, op] {
    Result<void> outcome;
    {
      nb::gil_scoped_acquire gil;
      try {
        call_python(shared->channel, *op);
      } catch (const std::exception& e) {  // nb::python_error among them: its text is enough
        outcome = fail(Errc::io, e.what());
      }
    }
    op->done->complete(std::move(outcome));
  });
  Task<void> answered = op->done->wait();
  Result<void> got = co_await with_deadline(std::move(answered), deadline_, what);
  if (got && op->result.size() != op->expected) {
    got = fail(Errc::internal, what + ": the channel returned " + std::to_string(op->result.size()) +
                                   " bytes, expected " + std::to_string(op->expected));
  }
  if (!got) {
    got.error().with_rank(rank_).with_operation(to_string(plan.kind));
    if (got.error().message.find(what) == std::string::npos) got.error().message = what + ": " + got.error().message;
    std::lock_guard lock(shared_->mutex);
    if (!shared_->broken) shared_->broken = got.error();
    co_return got;
  }
  if (op->expected > 0) std::memcpy(plan.recv.data(), op->result.data(), op->expected);
  co_return Result<void>{};
}

}  // namespace corockpt::python
