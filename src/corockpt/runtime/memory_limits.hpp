#pragma once
/// @file
/// How much more host memory this process may take before the kernel refuses it or kills
/// it: the least of what the machine has free, what this process's cgroup allows and what
/// its address-space limit leaves. Commands that allocate a model compare their need with
/// it before allocating, so an impossible model is a named error at once rather than
/// `std::bad_alloc` (or the OOM killer) after seconds of zero-filling memory.

#include <cstdint>
#include <string>

namespace corockpt {

struct MemoryHeadroom {
  std::uint64_t bytes = UINT64_MAX;  ///< UINT64_MAX when nothing could be read
  /// Which limit it is, with its figure: "MemAvailable in /proc/meminfo",
  /// "cgroup /sys/fs/cgroup/x/memory.max (4294967296) minus memory.current", "RLIMIT_AS".
  std::string source = "no limit found";
  /// MemAvailable alone: what every process of this machine shares (UINT64_MAX unread).
  std::uint64_t machine_available = UINT64_MAX;
};

/// Reads /proc/meminfo (MemAvailable), the cgroup's memory.max minus memory.current (v2,
/// this cgroup and its ancestors; v1 memory.limit_in_bytes minus usage) and RLIMIT_AS
/// minus the address space in use (VmSize): the smallest wins. Cheap (a few small files).
MemoryHeadroom memory_headroom();

}  // namespace corockpt
