#pragma once
// A test double that wraps a communicator and delays every operation of the groups a
// predicate picks (by group size), to make overlap between groups deterministic.
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <chrono>
#include <functional>
#include <memory>

#include "corockpt/plugins/comm/communicator.hpp"
#include "tests/support/wrapping_communicator.hpp"

namespace corockpt::test {

class DelayedCommunicator final : public WrappingCommunicator {
 public:
  using DelayFor = std::function<std::chrono::milliseconds(int group_size)>;

  DelayedCommunicator(std::shared_ptr<Communicator> inner, DelayFor delay_for)
      : WrappingCommunicator(std::move(inner)), delay_for_(std::move(delay_for)) {}


  Task<void> all_gather(std::span<const std::byte> send, std::span<std::byte> recv) override {
    co_await delay();
    co_return co_await inner_->all_gather(send, recv);
  }
  Task<void> all_gather_v(std::span<const std::byte> send, std::span<std::byte> recv,
                          std::span<const std::size_t> counts) override {
    co_await delay();
    co_return co_await inner_->all_gather_v(send, recv, counts);
  }
  Task<void> gather_v(std::span<const std::byte> send, std::span<std::byte> recv, std::span<const std::size_t> counts,
                      int root) override {
    co_await delay();
    co_return co_await inner_->gather_v(send, recv, counts, root);
  }
  Task<void> broadcast(std::span<std::byte> data, int root) override {
    co_await delay();
    co_return co_await inner_->broadcast(data, root);
  }
  Task<void> barrier() override {
    co_await delay();
    co_return co_await inner_->barrier();
  }
  Task<void> send(std::span<const std::byte> data, int peer, int tag) override {
    co_await delay();
    co_return co_await inner_->send(data, peer, tag);
  }
  Task<void> recv(std::span<std::byte> data, int peer, int tag) override {
    co_await delay();
    co_return co_await inner_->recv(data, peer, tag);
  }
  Task<std::shared_ptr<Communicator>> split(int color, int key) override {
    auto group = co_await inner_->split(color, key);
    if (!group) co_return fail(group.error());
    co_return std::shared_ptr<Communicator>(std::make_shared<DelayedCommunicator>(*group, delay_for_));
  }

 private:
  asio::awaitable<void> delay() {
    auto d = delay_for_(inner_->size());
    if (d.count() == 0) co_return;
    asio::steady_timer timer(co_await asio::this_coro::executor, d);
    co_await timer.async_wait(asio::use_awaitable);
  }

  DelayFor delay_for_;
};

}  // namespace corockpt::test
