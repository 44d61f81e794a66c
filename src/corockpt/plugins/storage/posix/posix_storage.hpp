#pragma once
/// @file
/// The `posix` storage plugin: pread/pwrite/fsync on the runtime's worker pool. The
/// fallback where io_uring is not allowed, and the baseline the `uring` plugin must beat.

#include <memory>

#include "corockpt/plugins/storage/storage.hpp"
#include "corockpt/runtime/runtime.hpp"

namespace corockpt {

std::unique_ptr<Storage> make_posix_storage(Runtime& runtime);

}  // namespace corockpt
