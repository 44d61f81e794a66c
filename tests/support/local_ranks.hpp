#pragma once
// Test helpers: a runtime with a storage plugin and staging buffers (what a checkpoint
// needs), and N ranks of the in-process backend each running a task.
#include <functional>
#include <memory>
#include <stdexcept>
#include <vector>

#include "corockpt/ckpt/checkpoint_io.hpp"
#include "corockpt/plugins/comm/local/local_communicator.hpp"
#include "corockpt/plugins/storage/make_storage.hpp"
#include "corockpt/runtime/runtime.hpp"

namespace corockpt::test {

class TestIo {
 public:
  explicit TestIo(StorageKind kind = StorageKind::automatic, std::size_t buffer_bytes = 1 << 20,
                  std::size_t buffer_count = 8) {
    auto storage = make_storage(runtime_, kind);
    if (!storage) throw std::runtime_error(storage.error().to_string());
    storage_ = std::move(*storage);
    auto pool = BufferPool::create({.buffer_bytes = buffer_bytes, .buffer_count = buffer_count}, make_host_allocator());
    if (!pool) throw std::runtime_error(pool.error().to_string());
    pool_ = std::move(*pool);
  }
  Runtime& runtime() { return runtime_; }
  CheckpointIo io() { return {&runtime_, storage_.get(), pool_.get()}; }
  /// Replaces the storage (a test double wrapping it, say); the old one is returned.
  std::unique_ptr<Storage> swap_storage(std::unique_ptr<Storage> storage) {
    std::swap(storage, storage_);
    return storage;
  }
  Storage& storage() { return *storage_; }

 private:
  Runtime runtime_;  // first: destroyed last
  std::unique_ptr<Storage> storage_;
  std::unique_ptr<BufferPool> pool_;
};

/// Runs `make(rank, world)` on each of `n` in-process ranks (each on its own strand) and
/// returns their results in rank order.
template <class T>
std::vector<Result<T>> run_local_ranks(Runtime& runtime, int n,
                                       const std::function<Task<T>(int, std::shared_ptr<Communicator>)>& make) {
  auto world = make_local_world(runtime, n);
  if (!world) throw std::runtime_error(world.error().to_string());
  std::vector<TaskHandle<T>> handles;
  for (int r = 0; r < n; ++r) handles.push_back(runtime.spawn(runtime.make_strand(), make(r, (*world)[r])));
  std::vector<Result<T>> results;
  for (auto& h : handles) results.push_back(h.get());
  return results;
}

}  // namespace corockpt::test
