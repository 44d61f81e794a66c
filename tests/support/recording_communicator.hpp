#pragma once
// A test double that records, per rank, the order in which collectives and transfers are
// issued (called) on each communicator of that rank, then passes them to the communicator
// it wraps. A communicator is named the same on every member: its name and size
// ("world/split(0) of 4": a split's name holds only its color, the lowest member).
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "corockpt/plugins/comm/communicator.hpp"
#include "tests/support/wrapping_communicator.hpp"

namespace corockpt::test {

/// One rank's issues, in order: the names of the communicators they were issued on.
struct IssueLog {
  std::mutex mutex;
  std::vector<std::string> issued;

  void record(const Communicator& communicator) {
    record(communicator.name() + " of " + std::to_string(communicator.size()));
  }
  void record(const std::string& communicator) {
    std::lock_guard lock(mutex);
    issued.push_back(communicator);
  }
  std::vector<std::string> take() {
    std::lock_guard lock(mutex);
    return std::exchange(issued, {});
  }
};

class RecordingCommunicator final : public WrappingCommunicator {
 public:
  RecordingCommunicator(std::shared_ptr<Communicator> inner, std::shared_ptr<IssueLog> log)
      : WrappingCommunicator(std::move(inner)), log_(std::move(log)) {}


  Task<void> all_gather(std::span<const std::byte> send, std::span<std::byte> recv) override {
    log_->record(*inner_);
    return inner_->all_gather(send, recv);
  }
  Task<void> all_gather_v(std::span<const std::byte> send, std::span<std::byte> recv,
                          std::span<const std::size_t> counts) override {
    log_->record(*inner_);
    return inner_->all_gather_v(send, recv, counts);
  }
  Task<void> gather_v(std::span<const std::byte> send, std::span<std::byte> recv, std::span<const std::size_t> counts,
                      int root) override {
    log_->record(*inner_);
    return inner_->gather_v(send, recv, counts, root);
  }
  Task<void> broadcast(std::span<std::byte> data, int root) override {
    log_->record(*inner_);
    return inner_->broadcast(data, root);
  }
  Task<void> barrier() override {
    log_->record(*inner_);
    return inner_->barrier();
  }
  Task<void> send(std::span<const std::byte> data, int peer, int tag) override {
    log_->record(*inner_);
    return inner_->send(data, peer, tag);
  }
  Task<void> recv(std::span<std::byte> data, int peer, int tag) override {
    log_->record(*inner_);
    return inner_->recv(data, peer, tag);
  }
  Task<void> exchange(std::span<const std::byte> send, std::span<const std::size_t> send_counts,
                      std::span<std::byte> recv, std::span<const std::size_t> recv_counts, int tag) override {
    log_->record(*inner_);
    return inner_->exchange(send, send_counts, recv, recv_counts, tag);
  }
  Task<std::shared_ptr<Communicator>> split(int color, int key) override { return split_recorded(color, key); }

 private:
  Task<std::shared_ptr<Communicator>> split_recorded(int color, int key) {
    auto child = co_await inner_->split(color, key);
    if (!child) co_return fail(child.error());
    co_return std::shared_ptr<Communicator>(std::make_shared<RecordingCommunicator>(*child, log_));
  }

  std::shared_ptr<IssueLog> log_;
};

}  // namespace corockpt::test
