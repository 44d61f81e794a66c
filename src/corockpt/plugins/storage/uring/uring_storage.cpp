#include "corockpt/plugins/storage/uring/uring_storage.hpp"

#include <liburing.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/dispatch.hpp>
#include <asio/steady_timer.hpp>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <string_view>
#include <cstring>
#include <deque>
#include <limits>

#include "corockpt/plugins/storage/posix/posix_storage.hpp"
#include "corockpt/runtime/fd_wait.hpp"

namespace corockpt {

namespace {

enum class OpKind { write, read, fsync };

struct Op {
  OpKind kind;
  int fd;
  std::byte* buffer = nullptr;
  unsigned length = 0;
  std::uint64_t offset = 0;
  int buffer_index = -1;  // registered buffer, or -1
  std::shared_ptr<Completion<int>> done;
};

// The largest transfer one SQE carries: the length field is 32 bits; a multiple of
// every O_DIRECT alignment so that the pieces of an aligned write stay aligned.
constexpr std::size_t max_transfer = std::size_t{1} << 30;

/// The ring and everything touched from the io thread. Shared with the completion loop
/// and the operations in flight, so that it outlives the `Storage` facade if it must.
class Ring : public std::enable_shared_from_this<Ring> {
 public:
  Ring(Runtime& runtime, unsigned depth) : strand_(runtime.make_strand()), retry_(strand_), depth_(depth) {}

  Result<void> init() {
    // No setup flags. COOP_TASKRUN and DEFER_TASKRUN post completions only when the
    // submitting thread enters io_uring itself, and ours sleeps in epoll waiting for the
    // eventfd; SINGLE_ISSUER would tie the ring to the thread that creates it, which is
    // not the io thread that submits.
    io_uring_params params{};
    int rc = io_uring_queue_init_params(depth_, &ring_, &params);
    if (rc < 0) return fail(system_error(-rc, "io_uring_queue_init"));
    ring_ready_ = true;
    event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (event_fd_ < 0) return fail(system_error(errno, "eventfd"));
    rc = io_uring_register_eventfd(&ring_, event_fd_);
    if (rc < 0) return fail(system_error(-rc, "io_uring_register_eventfd"));
    watcher_.emplace(strand_, event_fd_);
    return {};
  }

  ~Ring() {
    watcher_.reset();
    if (ring_ready_) io_uring_queue_exit(&ring_);
    if (event_fd_ >= 0) ::close(event_fd_);
  }

  void start() {
    asio::co_spawn(strand_, completion_loop(shared_from_this()),
                   asio::bind_cancellation_slot(stop_.slot(), asio::detached));
  }

  void stop() {
    asio::dispatch(strand_, [self = shared_from_this()] { self->stop_.emit(asio::cancellation_type::terminal); });
  }

  /// Queues `op` and waits for the kernel's result (bytes, or -errno). The wait cannot be
  /// cancelled: the kernel may still be using the caller's buffer.
  Task<int> run(Op op) {
    used_.store(true);
    auto done = Completion<int>::make();
    op.done = done;
    asio::dispatch(strand_, [self = shared_from_this(), queued = std::move(op)]() mutable {
      self->pending_.push_back(std::move(queued));
      self->flush();
    });
    asio::cancellation_signal never;
    co_return co_await done->async_wait(asio::bind_cancellation_slot(never.slot(), asio::use_awaitable));
  }

  /// Registers `regions` as fixed buffers. @returns false when the kernel refuses
  /// (RLIMIT_MEMLOCK, too many), when buffers are registered already, or once any
  /// operation has been queued.
  bool register_buffers(std::span<const std::span<std::byte>> regions) {
    // The table is read on the io thread by every transfer: it is fixed before the first.
    if (used_.load() || !registered_.empty() || regions.empty()) return false;
    std::vector<iovec> iov;
    iov.reserve(regions.size());
    for (auto r : regions) iov.push_back({r.data(), r.size()});
    if (io_uring_register_buffers(&ring_, iov.data(), static_cast<unsigned>(iov.size())) < 0) return false;
    for (std::size_t i = 0; i < regions.size(); ++i) {
      registered_.push_back({regions[i].data(), regions[i].data() + regions[i].size(), static_cast<int>(i)});
    }
    std::sort(registered_.begin(), registered_.end(), [](auto& a, auto& b) { return a.begin < b.begin; });
    return true;
  }

  /// The index of the registered buffer that holds all of [p, p + n), or -1.
  int registered_index(const std::byte* p, std::size_t n) const {
    auto it = std::upper_bound(registered_.begin(), registered_.end(), p,
                               [](const std::byte* x, const Region& r) { return x < r.begin; });
    if (it == registered_.begin()) return -1;
    --it;
    return (p + n <= it->end) ? it->index : -1;
  }

 private:
  struct Region {
    std::byte* begin;
    std::byte* end;
    int index;
  };

  // Moves queued operations into free SQEs and submits them in one syscall.
  void flush() {
    unsigned added = 0;
    while (!pending_.empty() && in_flight_ < depth_) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      if (!sqe) break;
      auto* op = new Op(std::move(pending_.front()));
      pending_.pop_front();
      switch (op->kind) {
        case OpKind::write:
          if (op->buffer_index >= 0) {
            io_uring_prep_write_fixed(sqe, op->fd, op->buffer, op->length, op->offset, op->buffer_index);
          } else {
            io_uring_prep_write(sqe, op->fd, op->buffer, op->length, op->offset);
          }
          break;
        case OpKind::read:
          if (op->buffer_index >= 0) {
            io_uring_prep_read_fixed(sqe, op->fd, op->buffer, op->length, op->offset, op->buffer_index);
          } else {
            io_uring_prep_read(sqe, op->fd, op->buffer, op->length, op->offset);
          }
          break;
        case OpKind::fsync: io_uring_prep_fsync(sqe, op->fd, 0); break;
      }
      io_uring_sqe_set_data(sqe, op);
      ++in_flight_;
      ++added;
    }
    if (added == 0) return;
    submit();
  }

  // Hands the prepared SQEs to the kernel. In flight never exceeds the SQ size and the
  // CQ is twice that, so EBUSY (CQ overflow) cannot happen; EINTR, EAGAIN or ENOMEM can,
  // and then the SQEs stay in the ring and a retry follows shortly. No completion may be
  // coming that would otherwise retry for us.
  void submit() {
    if (io_uring_submit(&ring_) >= 0 || io_uring_sq_ready(&ring_) == 0) return;
    retry_.expires_after(std::chrono::milliseconds(1));
    retry_.async_wait([self = shared_from_this()](std::error_code ec) {
      if (!ec) self->submit();
    });
  }

  void reap() {
    unsigned head;
    unsigned seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      std::unique_ptr<Op> op(static_cast<Op*>(io_uring_cqe_get_data(cqe)));
      op->done->complete(cqe->res);
      ++seen;
    }
    io_uring_cq_advance(&ring_, seen);
    in_flight_ -= seen;
  }

  static asio::awaitable<void> completion_loop(std::shared_ptr<Ring> self) {
    for (;;) {
      auto ready = co_await self->watcher_->readable();
      if (!ready) break;  // stopped
      std::uint64_t count;
      [[maybe_unused]] auto n = ::read(self->event_fd_, &count, sizeof count);
      self->reap();
      self->flush();
    }
  }

  Runtime::Strand strand_;
  asio::steady_timer retry_;
  unsigned depth_;
  io_uring ring_{};
  bool ring_ready_ = false;
  int event_fd_ = -1;
  std::optional<FdWatcher> watcher_;
  asio::cancellation_signal stop_;
  std::deque<Op> pending_;
  unsigned in_flight_ = 0;
  std::vector<Region> registered_;
  std::atomic<bool> used_{false};  // an operation was queued: registration is closed
};

class UringStorage final : public Storage {
 public:
  UringStorage(Tracer& tracer, std::shared_ptr<Ring> ring, std::unique_ptr<Storage> metadata)
      : tracer_(tracer), ring_(std::move(ring)), metadata_(std::move(metadata)) {}
  ~UringStorage() override { ring_->stop(); }

  std::string_view name() const override { return "uring"; }

  Task<File> open(std::string path, OpenOptions options) override {
    return metadata_->open(std::move(path), options);
  }

  Task<void> write_at(File& file, std::uint64_t offset, std::span<const std::byte> data) override {
    if (auto ok = file.check_transfer(offset, data.data(), data.size(), "write_at"); !ok) co_return ok;
    ScopedSpan span(tracer_, "write_at", "write");
    while (!data.empty()) {
      std::size_t length = std::min(data.size(), max_transfer);
      auto* buffer = const_cast<std::byte*>(data.data());  // io_uring's write takes a non-const pointer
      auto res = co_await ring_->run({OpKind::write, file.fd(), buffer, static_cast<unsigned>(length), offset,
                                      ring_->registered_index(buffer, length), nullptr});
      if (!res) co_return fail(res.error().with_path(file.path()).with_operation("write_at"));
      if (*res < 0) co_return fail(system_error(-*res, "write_at", file.path()));
      if (*res == 0) co_return fail(Errc::io, "write made no progress", {.path = file.path(), .operation = "write_at"});
      data = data.subspan(static_cast<std::size_t>(*res));
      offset += static_cast<std::uint64_t>(*res);
    }
    co_return Result<void>{};
  }

  Task<std::size_t> read_at(File& file, std::uint64_t offset, std::span<std::byte> data) override {
    if (auto ok = file.check_transfer(offset, data.data(), data.size(), "read_at"); !ok) co_return fail(ok.error());
    ScopedSpan span(tracer_, "read_at", "read");
    std::size_t done = 0;
    while (done < data.size()) {
      std::size_t length = std::min(data.size() - done, max_transfer);
      std::byte* buffer = data.data() + done;
      auto res = co_await ring_->run({OpKind::read, file.fd(), buffer, static_cast<unsigned>(length), offset + done,
                                      ring_->registered_index(buffer, length), nullptr});
      if (!res) co_return fail(res.error().with_path(file.path()).with_operation("read_at"));
      if (*res < 0) co_return fail(system_error(-*res, "read_at", file.path()));
      if (*res == 0) break;  // end of file
      done += static_cast<std::size_t>(*res);
    }
    co_return done;
  }

  Task<void> fsync(File& file) override {
    ScopedSpan span(tracer_, "fsync", "write");
    auto res = co_await ring_->run({OpKind::fsync, file.fd(), nullptr, 0, 0, -1, nullptr});
    if (!res) co_return fail(res.error().with_path(file.path()).with_operation("fsync"));
    if (*res < 0) co_return fail(system_error(-*res, "fsync", file.path()));
    co_return Result<void>{};
  }

  Task<void> truncate(File& file, std::uint64_t size) override { return metadata_->truncate(file, size); }
  Task<void> allocate(File& file, std::uint64_t size) override { return metadata_->allocate(file, size); }
  Task<void> make_dir(std::string path) override { return metadata_->make_dir(std::move(path)); }
  Task<void> rename(std::string from, std::string to) override {
    return metadata_->rename(std::move(from), std::move(to));
  }
  Task<void> remove(std::string path) override { return metadata_->remove(std::move(path)); }
  Task<std::vector<DirEntry>> list(std::string dir) override { return metadata_->list(std::move(dir)); }
  Task<void> fsync_dir(std::string path) override { return metadata_->fsync_dir(std::move(path)); }
  Task<std::optional<DirLock>> try_lock_dir(std::string path) override {
    return metadata_->try_lock_dir(std::move(path));
  }
  Task<std::uint64_t> allocated_bytes(std::string path) override { return metadata_->allocated_bytes(std::move(path)); }
  Task<MappedBytes> map_file(std::string path) override { return metadata_->map_file(std::move(path)); }

  bool register_buffers(std::span<const std::span<std::byte>> regions) override {
    return ring_->register_buffers(regions);
  }

 private:
  Tracer& tracer_;
  std::shared_ptr<Ring> ring_;
  std::unique_ptr<Storage> metadata_;
};

}  // namespace

Result<std::unique_ptr<Storage>> make_uring_storage(Runtime& runtime, UringOptions options) {
  if (options.queue_depth == 0) return fail(Errc::invalid_argument, "uring queue_depth must be at least 1");
  if (const char* off = std::getenv("COROCKPT_NO_URING"); off && std::string_view(off) == "1") {
    return fail(Errc::unavailable, "io_uring cannot be set up here: disabled by COROCKPT_NO_URING=1");
  }
  auto ring = std::make_shared<Ring>(runtime, options.queue_depth);
  if (auto ok = ring->init(); !ok) {
    Error e = ok.error();
    e.code = Errc::unavailable;
    e.message = "io_uring cannot be set up here: " + e.message;
    return fail(std::move(e));
  }
  ring->start();
  return std::make_unique<UringStorage>(runtime.tracer(), std::move(ring), make_posix_storage(runtime));
}

}  // namespace corockpt
