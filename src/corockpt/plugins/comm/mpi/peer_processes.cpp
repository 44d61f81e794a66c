#include "corockpt/plugins/comm/mpi/peer_processes.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <fstream>
#include <vector>

namespace corockpt::mpi_detail {

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

bool has_exited(std::int64_t pid) { return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH; }

}  // namespace

PeerProcess this_process() {
  char host[HOST_NAME_MAX + 1] = {};
  ::gethostname(host, sizeof host - 1);
  // Two containers may share a host name; their boot id or pid namespace tells them apart.
  const std::string key =
      std::string(host) + "|" + first_line("/proc/sys/kernel/random/boot_id") + "|" + link_target("/proc/self/ns/pid");
  return {.host = fnv1a(key), .pid = static_cast<std::int64_t>(::getpid())};
}

std::string describe_peers(std::span<const PeerProcess> world, std::span<const int> members, int self) {
  if (self < 0 || static_cast<std::size_t>(self) >= world.size()) return "";
  const std::uint64_t here = world[static_cast<std::size_t>(self)].host;
  std::vector<std::string> exited;
  int running = 0, elsewhere = 0;
  for (int member : members) {
    if (member == self || member < 0 || static_cast<std::size_t>(member) >= world.size()) continue;
    const PeerProcess& peer = world[static_cast<std::size_t>(member)];
    if (peer.host != here) {
      ++elsewhere;
    } else if (has_exited(peer.pid)) {
      exited.push_back("world rank " + std::to_string(member) + " (pid " + std::to_string(peer.pid) + ", this host)");
    } else {
      ++running;
    }
  }
  std::string text;
  for (std::size_t i = 0; i < exited.size(); ++i) text += (i == 0 ? "" : ", ") + exited[i];
  if (!exited.empty()) text += exited.size() == 1 ? " has exited" : " have exited";
  if (exited.empty() && running > 0) {
    text = running == 1 ? "the other rank on this host is running"
                        : "the " + std::to_string(running) + " other ranks on this host are running";
  }
  if (elsewhere > 0) {
    text += (text.empty() ? "" : "; ") + std::to_string(elsewhere) + " ranks on other hosts were not checked";
  }
  return text;
}

}  // namespace corockpt::mpi_detail
