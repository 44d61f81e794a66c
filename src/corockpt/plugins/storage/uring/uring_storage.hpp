#pragma once
/// @file
/// The `uring` storage plugin: data transfers and fsync through an io_uring ring owned
/// by the plugin, whose completions reach the io_context through the ring's eventfd.
/// Metadata operations (open, rename, list, ...) run on the worker pool as in `posix`.

#include <memory>

#include "corockpt/plugins/storage/storage.hpp"
#include "corockpt/runtime/runtime.hpp"

namespace corockpt {

struct UringOptions {
  /// Operations in the kernel at once (the ring's size); more wait in a queue.
  unsigned queue_depth = 64;
};

/// @returns Errc::unavailable when io_uring cannot be set up here (old kernel, a
///   container's seccomp policy, kernel.io_uring_disabled), with the kernel's reason;
///   also when the environment sets COROCKPT_NO_URING=1, which simulates that.
/// @note Destroy the storage before its runtime, and only after its operations ended.
Result<std::unique_ptr<Storage>> make_uring_storage(Runtime& runtime, UringOptions options = {});

}  // namespace corockpt
