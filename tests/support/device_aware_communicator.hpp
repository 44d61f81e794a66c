#pragma once
// A test double of a communicator that moves device memory, as nccl does
// (`memory_space()` is cuda), over an inner host communicator: spans in a
// ScramblingDevice's memory are copied to the host through the device, moved by the
// inner communicator, and copied back; host spans pass as they are (nccl stages them).
// With it, the collector's device-buffer path runs on the CPU: any direct host access to
// the scrambled memory shows as wrong values.
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "corockpt/plugins/comm/communicator.hpp"
#include "tests/support/scrambling_device.hpp"
#include "tests/support/wrapping_communicator.hpp"

namespace corockpt::test {

class DeviceAwareCommunicator final : public WrappingCommunicator {
 public:
  DeviceAwareCommunicator(std::shared_ptr<Communicator> inner, std::shared_ptr<ScramblingDevice> device)
      : WrappingCommunicator(std::move(inner)), device_(std::move(device)) {}

  /// Wraps every rank of a world.
  static std::vector<std::shared_ptr<Communicator>> wrap(const std::vector<std::shared_ptr<Communicator>>& world,
                                                         const std::shared_ptr<ScramblingDevice>& device) {
    std::vector<std::shared_ptr<Communicator>> out;
    for (const auto& rank : world) out.push_back(std::make_shared<DeviceAwareCommunicator>(rank, device));
    return out;
  }

  std::string_view backend() const override { return "device-aware"; }
  MemorySpace memory_space() const override { return MemorySpace::cuda; }

  Task<void> all_gather(std::span<const std::byte> send, std::span<std::byte> recv) override {
    Staged in(*device_, send), out(*device_, recv);
    if (auto ok = co_await in.copy_in(); !ok) co_return ok;
    if (auto ok = co_await inner_->all_gather(in.host(), out.host()); !ok) co_return ok;
    co_return co_await out.copy_out();
  }
  Task<void> all_gather_v(std::span<const std::byte> send, std::span<std::byte> recv,
                          std::span<const std::size_t> counts) override {
    Staged in(*device_, send), out(*device_, recv);
    if (auto ok = co_await in.copy_in(); !ok) co_return ok;
    if (auto ok = co_await inner_->all_gather_v(in.host(), out.host(), counts); !ok) co_return ok;
    co_return co_await out.copy_out();
  }
  Task<void> gather_v(std::span<const std::byte> send, std::span<std::byte> recv, std::span<const std::size_t> counts,
                      int root) override {
    Staged in(*device_, send), out(*device_, recv);
    if (auto ok = co_await in.copy_in(); !ok) co_return ok;
    if (auto ok = co_await inner_->gather_v(in.host(), out.host(), counts, root); !ok) co_return ok;
    co_return co_await out.copy_out();
  }
  Task<void> broadcast(std::span<std::byte> data, int root) override {
    Staged both(*device_, data);
    if (auto ok = co_await both.copy_in(); !ok) co_return ok;
    if (auto ok = co_await inner_->broadcast(both.host(), root); !ok) co_return ok;
    co_return co_await both.copy_out();
  }
  Task<void> barrier() override { return inner_->barrier(); }
  Task<void> send(std::span<const std::byte> data, int peer, int tag) override {
    Staged in(*device_, data);
    if (auto ok = co_await in.copy_in(); !ok) co_return ok;
    co_return co_await inner_->send(in.host(), peer, tag);
  }
  Task<void> recv(std::span<std::byte> data, int peer, int tag) override {
    Staged out(*device_, data);
    if (auto ok = co_await inner_->recv(out.host(), peer, tag); !ok) co_return ok;
    co_return co_await out.copy_out();
  }
  Task<std::shared_ptr<Communicator>> split(int color, int key) override {
    auto child = co_await inner_->split(color, key);
    if (!child) co_return fail(child.error());
    co_return std::shared_ptr<Communicator>(std::make_shared<DeviceAwareCommunicator>(*child, device_));
  }

 private:
  // A span as the inner communicator sees it: itself in host memory, a host copy of it
  // in device memory.
  class Staged {
   public:
    Staged(ScramblingDevice& device, std::span<const std::byte> span)
        : device_(device), span_(const_cast<std::byte*>(span.data()), span.size()),
          on_device_(!span.empty() && device.owns(span.data())), copy_(on_device_ ? span.size() : 0) {}
    std::span<std::byte> host() { return on_device_ ? std::span<std::byte>(copy_) : span_; }
    Task<void> copy_in() {
      if (!on_device_) co_return Result<void>{};
      co_return co_await device_.copy_to_host(copy_, span_);
    }
    Task<void> copy_out() {
      if (!on_device_) co_return Result<void>{};
      co_return co_await device_.copy_to_device(span_, copy_);
    }

   private:
    ScramblingDevice& device_;
    std::span<std::byte> span_;
    bool on_device_;
    std::vector<std::byte> copy_;
  };

  std::shared_ptr<ScramblingDevice> device_;
};

}  // namespace corockpt::test
