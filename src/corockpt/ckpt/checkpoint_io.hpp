#pragma once
/// @file
/// `CheckpointIo`: the engines a checkpoint operation runs on — the runtime (whose worker
/// pool copies and checksums), the storage plugin, and the staging buffers data passes
/// through on its way to and from the disk. Ranks in one process may share all three.

#include "corockpt/plugins/storage/storage.hpp"
#include "corockpt/runtime/buffer_pool.hpp"
#include "corockpt/runtime/runtime.hpp"

namespace corockpt {

struct CheckpointIo {
  Runtime* runtime = nullptr;
  Storage* storage = nullptr;
  /// Its buffers bound the bytes in flight; their size must be a multiple of 4096.
  BufferPool* staging = nullptr;
};

}  // namespace corockpt
