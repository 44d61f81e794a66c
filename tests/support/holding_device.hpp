#pragma once
// A test double of a GPU whose copies complete only when the test releases them, in the
// order it chooses: copies that a real device would finish in issue order can be made to
// finish in any other. Memory and the copies themselves are a ScramblingDevice's.
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "corockpt/plugins/device/device.hpp"
#include "corockpt/runtime/completion.hpp"
#include "tests/support/scrambling_device.hpp"

namespace corockpt::test {

class HoldingDevice final : public Device {
 public:
  enum class Release { oldest_first, newest_first };

  explicit HoldingDevice(std::shared_ptr<ScramblingDevice> memory) : memory_(std::move(memory)) {}

  std::string_view backend() const override { return "holding"; }
  MemorySpace space() const override { return memory_->space(); }
  const std::string& name() const override { return memory_->name(); }
  Result<DeviceMemory> allocate(std::size_t bytes) override { return memory_->allocate(bytes); }
  Result<void> order_after_compute() override { return memory_->order_after_compute(); }
  std::shared_ptr<BufferAllocator> staging_allocator() override { return memory_->staging_allocator(); }

  /// Waits to be released (while holding), then copies.
  Task<void> copy(CopyDirection direction, std::span<const CopyPiece> pieces) override {
    auto gate = Completion<void>::make();
    {
      std::lock_guard lock(mutex_);
      if (holding_) {
        held_.push_back(gate);
        ++arrived_;
      } else {
        gate->complete(Result<void>{});
      }
    }
    if (auto ok = co_await gate->wait(); !ok) co_return ok;
    co_return co_await memory_->copy(direction, pieces);
  }

  /// From now on copies wait for release_when_quiet (off: they run at once).
  void hold(bool on) {
    std::lock_guard lock(mutex_);
    holding_ = on;
  }

  /// Releases one held copy, the oldest or the newest, when no copy arrived since the
  /// previous call: every copy the ranks could issue is then waiting, and the release
  /// order is the test's, not the issue order.
  void release_when_quiet(Release which) {
    std::shared_ptr<Completion<void>> gate;
    {
      std::lock_guard lock(mutex_);
      const bool quiet = arrived_ == arrived_at_last_look_;
      arrived_at_last_look_ = arrived_;
      if (!quiet || held_.empty()) return;
      if (which == Release::oldest_first) {
        gate = held_.front();
        held_.pop_front();
      } else {
        gate = held_.back();
        held_.pop_back();
      }
    }
    gate->complete(Result<void>{});
  }

 private:
  std::shared_ptr<ScramblingDevice> memory_;
  std::mutex mutex_;
  bool holding_ = false;
  std::deque<std::shared_ptr<Completion<void>>> held_;
  std::size_t arrived_ = 0;
  std::size_t arrived_at_last_look_ = 0;
};

}  // namespace corockpt::test
