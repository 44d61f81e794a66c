#pragma once
/// @file
/// Which process this is, comparable across the processes of a job: the same key on two
/// ranks means one process (ranks that share memory), the same host key means one machine.

#include <cstdint>

namespace corockpt {

struct ProcessId {
  std::uint64_t host = 0;  ///< a hash of the host name, its boot id and the pid namespace
  std::int64_t pid = 0;
  bool operator==(const ProcessId&) const = default;
};

ProcessId this_process_id();

}  // namespace corockpt
