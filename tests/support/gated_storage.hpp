#pragma once
// A test double around a real storage: data writes can be held back until the test
// opens a gate (to make "persist still running" deterministic) or made to fail with a
// chosen error (a full disk). Everything else passes through.
#include <atomic>
#include <memory>
#include <optional>

#include "corockpt/plugins/storage/storage.hpp"
#include "corockpt/runtime/latch.hpp"

namespace corockpt::test {

class GatedStorage final : public Storage {
 public:
  explicit GatedStorage(Storage& inner) : inner_(inner) {}

  /// Data writes wait until `open_gate()` (from then on they pass).
  void close_gate() { gate_ = std::make_shared<Latch>(); }
  void open_gate() {
    if (gate_) gate_->set();
  }
  /// Data writes fail with `code` (e.g. Errc::no_space) until cleared.
  void fail_writes(std::optional<Errc> code) { failure_ = code; }
  int writes_held() const { return held_.load(); }

  std::string_view name() const override { return "gated"; }
  Task<File> open(std::string path, OpenOptions options) override { return inner_.open(std::move(path), options); }
  Task<void> write_at(File& file, std::uint64_t offset, std::span<const std::byte> data) override {
    return gated_write(file, offset, data);
  }
  Task<std::size_t> read_at(File& file, std::uint64_t offset, std::span<std::byte> data) override {
    return inner_.read_at(file, offset, data);
  }
  Task<void> fsync(File& file) override { return inner_.fsync(file); }
  Task<void> truncate(File& file, std::uint64_t size) override { return inner_.truncate(file, size); }
  Task<void> allocate(File& file, std::uint64_t size) override { return inner_.allocate(file, size); }
  Task<void> make_dir(std::string path) override { return inner_.make_dir(std::move(path)); }
  Task<void> rename(std::string from, std::string to) override { return inner_.rename(std::move(from), std::move(to)); }
  Task<void> remove(std::string path) override { return inner_.remove(std::move(path)); }
  Task<std::vector<DirEntry>> list(std::string dir) override { return inner_.list(std::move(dir)); }
  Task<void> fsync_dir(std::string path) override { return inner_.fsync_dir(std::move(path)); }
  Task<std::optional<DirLock>> try_lock_dir(std::string path) override { return inner_.try_lock_dir(std::move(path)); }
  Task<std::uint64_t> allocated_bytes(std::string path) override { return inner_.allocated_bytes(std::move(path)); }

 private:
  Task<void> gated_write(File& file, std::uint64_t offset, std::span<const std::byte> data) {
    if (auto code = failure_) co_return fail(*code, "simulated: no space left on device", {.path = file.path(), .operation = "write_at"});
    if (std::shared_ptr<Latch> gate = gate_) {
      ++held_;
      auto opened = co_await gate->async_wait();
      --held_;
      if (!opened) co_return fail(opened.error());  // cancelled while held
    }
    co_return co_await inner_.write_at(file, offset, data);
  }

  Storage& inner_;
  std::shared_ptr<Latch> gate_;
  std::optional<Errc> failure_;
  std::atomic<int> held_{0};
};

}  // namespace corockpt::test
