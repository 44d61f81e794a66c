#include "corockpt/runtime/process_id.hpp"

#include <unistd.h>

#include <climits>
#include <fstream>
#include <string>

namespace corockpt {

namespace {

// FNV-1a: the same on every build and host, unlike std::hash.
std::uint64_t fnv1a(const std::string& text) {
  std::uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

std::string first_line(const char* path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string link_target(const char* path) {
  char target[PATH_MAX] = {};
  const ssize_t length = ::readlink(path, target, sizeof target - 1);
  return length > 0 ? std::string(target, static_cast<std::size_t>(length)) : std::string();
}

}  // namespace

ProcessId this_process_id() {
  char host[HOST_NAME_MAX + 1] = {};
  ::gethostname(host, sizeof host - 1);
  // Two containers may share a host name; their boot id or pid namespace tells them apart.
  const std::string key = std::string(host) + "|" + first_line("/proc/sys/kernel/random/boot_id") + "|" +
                          link_target("/proc/self/ns/pid");
  return {.host = fnv1a(key), .pid = static_cast<std::int64_t>(::getpid())};
}

}  // namespace corockpt
