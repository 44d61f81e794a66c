#pragma once
/// @file
/// The `host` device plugin: tensors in ordinary process memory. Copies are memcpy; those
/// of `HostDeviceOptions::inline_copy_bytes` or more run on the runtime's worker pool so
/// that the io thread never stalls on a large one. Copies never fail once their sizes
/// agree and have no deadline (nothing outside the process is involved).

#include <cstddef>
#include <memory>

#include "corockpt/plugins/device/device.hpp"
#include "corockpt/runtime/runtime.hpp"

namespace corockpt {

struct HostDeviceOptions {
  /// Copies smaller than this run inline on the awaiting coroutine's thread: below it, a
  /// trip to the worker pool costs more than the memcpy.
  std::size_t inline_copy_bytes = 256 << 10;
};

/// The host device. `runtime` must outlive it.
std::shared_ptr<Device> make_host_device(Runtime& runtime, HostDeviceOptions options = {});

}  // namespace corockpt
