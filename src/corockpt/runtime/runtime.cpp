#include "corockpt/runtime/runtime.hpp"

namespace corockpt {

static std::size_t resolve_workers(std::size_t requested) {
  if (requested > 0) return requested;
  unsigned cores = std::thread::hardware_concurrency();
  return cores > 0 ? cores : 1;
}

Runtime::Runtime(RuntimeOptions options)
    : worker_count_(resolve_workers(options.worker_threads)),
      io_(1),  // one thread runs it: strands and the io_uring ring rely on that
      work_(asio::make_work_guard(io_)),
      workers_(worker_count_) {
  io_thread_ = std::thread([this] { io_.run(); });
  io_thread_id_ = io_thread_.get_id();
}

Runtime::~Runtime() {
  work_.reset();
  io_.stop();
  if (io_thread_.joinable()) io_thread_.join();
  workers_.join();
}

}  // namespace corockpt
