#pragma once
/// @file
/// `PythonChannel`: a corockpt Communicator whose collectives run in Python, on the
/// torch.distributed gloo group the Python AsyncCheckpointer creates for itself (under
/// torchrun, without MPI, never the training loop's group). Only the small plans and
/// outcomes of saves cross it: all_gather, all_gather_v, gather_v, broadcast, barrier;
/// the rest are Errc::unavailable.
///
/// Each operation is handed to the channel's own thread, which takes the GIL and calls
/// the Python object's method (corockpt/_channel.py); the issue order is the order of
/// that one thread, the same on every rank as the saves issue them. The coroutine that
/// asked waits on a Completion, never blocking the runtime. Results go through a buffer
/// the operation owns, so a caller that stopped waiting (its deadline) is never written
/// to. A failure or a missed deadline breaks the channel: later operations fail at once.

#include <nanobind/nanobind.h>

#include <chrono>
#include <memory>
#include <string>

#include "corockpt/plugins/comm/detail/planned_communicator.hpp"
#include "corockpt/runtime/runtime.hpp"

namespace corockpt::python {

class PythonChannel final : public comm_detail::PlannedCommunicator {
 public:
  /// @param channel a corockpt._channel.GlooChannel (rank, size and the collectives).
  /// @param deadline of one operation (the gloo group's timeout is the same).
  PythonChannel(nanobind::object channel, int rank, int size, std::chrono::milliseconds deadline);
  ~PythonChannel() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view backend() const override { return "python"; }
  MemorySpace memory_space() const override { return MemorySpace::host; }
  const std::string& name() const override { return name_; }
  Task<std::shared_ptr<Communicator>> split(int color, int key) override;
  Task<void> exchange(std::span<const std::byte> send, std::span<const std::size_t> send_counts,
                      std::span<std::byte> recv, std::span<const std::size_t> recv_counts, int tag) override;

 private:
  struct Shared;
  Task<void> run(comm_detail::Plan plan) override;

  std::shared_ptr<Shared> shared_;
  int rank_;
  int size_;
  std::string name_ = "python gloo channel";
  std::chrono::milliseconds deadline_;
};

}  // namespace corockpt::python
