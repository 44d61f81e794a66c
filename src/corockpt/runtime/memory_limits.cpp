#include "corockpt/runtime/memory_limits.hpp"

#include <sys/resource.h>

#include <fstream>
#include <optional>
#include <sstream>

namespace corockpt {

namespace {

// The value of a "Key:   1234 kB" line of a /proc file, in bytes.
std::optional<std::uint64_t> proc_kib(const char* path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) != 0) continue;
    std::istringstream fields(line.substr(key.size() + 1));
    std::uint64_t kib = 0;
    if (fields >> kib) return kib * 1024;
  }
  return std::nullopt;
}

// A cgroup file holding one number ("max" or absent: no limit).
std::optional<std::uint64_t> cgroup_number(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text) || text == "max") return std::nullopt;
  try {
    return std::stoull(text);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

void consider(MemoryHeadroom& headroom, std::uint64_t bytes, std::string source) {
  if (bytes < headroom.bytes) headroom = {bytes, std::move(source)};
}

std::uint64_t minus(std::uint64_t limit, std::uint64_t used) { return limit > used ? limit - used : 0; }

// cgroup v2: this cgroup's and every ancestor's memory.max minus its memory.current;
// v1: memory.limit_in_bytes minus memory.usage_in_bytes of this memory cgroup.
void consider_cgroups(MemoryHeadroom& headroom) {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    // "0::/path" (v2) or "N:memory:/path" (v1; controllers may be listed together).
    const auto first = line.find(':');
    const auto second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = line.substr(first + 1, second - first - 1);
    std::string path = line.substr(second + 1);
    if (controllers.empty()) {
      for (;;) {
        const std::string dir = "/sys/fs/cgroup" + (path == "/" ? std::string() : path);
        if (auto max = cgroup_number(dir + "/memory.max")) {
          const std::uint64_t used = cgroup_number(dir + "/memory.current").value_or(0);
          consider(headroom, minus(*max, used),
                   "cgroup " + dir + "/memory.max (" + std::to_string(*max) + " bytes) minus memory.current");
        }
        if (path == "/" || path.empty()) break;
        path = path.substr(0, path.rfind('/'));
        if (path.empty()) path = "/";
      }
    } else if (("," + controllers + ",").find(",memory,") != std::string::npos) {
      const std::string dir = "/sys/fs/cgroup/memory" + (path == "/" ? std::string() : path);
      if (auto limit = cgroup_number(dir + "/memory.limit_in_bytes"); limit && *limit < (std::uint64_t{1} << 62)) {
        const std::uint64_t used = cgroup_number(dir + "/memory.usage_in_bytes").value_or(0);
        consider(headroom, minus(*limit, used),
                 "cgroup " + dir + "/memory.limit_in_bytes (" + std::to_string(*limit) + " bytes) minus usage");
      }
    }
  }
}

}  // namespace

MemoryHeadroom memory_headroom() {
  MemoryHeadroom headroom;
  if (auto available = proc_kib("/proc/meminfo", "MemAvailable")) {
    consider(headroom, *available, "MemAvailable in /proc/meminfo");
    headroom.machine_available = *available;
  }
  consider_cgroups(headroom);
  rlimit limit{};
  if (::getrlimit(RLIMIT_AS, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    const std::uint64_t used = proc_kib("/proc/self/status", "VmSize").value_or(0);
    consider(headroom, minus(limit.rlim_cur, used),
             "RLIMIT_AS (" + std::to_string(limit.rlim_cur) + " bytes) minus the address space in use");
  }
  return headroom;
}

}  // namespace corockpt
