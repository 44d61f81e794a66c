#include "corockpt/plugins/comm/mpi/peer_processes.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace corockpt::mpi_detail {

namespace {

bool has_exited(std::int64_t pid) { return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH; }

}  // namespace

std::string describe_peers(std::span<const ProcessId> world, std::span<const int> members, int self) {
  if (self < 0 || static_cast<std::size_t>(self) >= world.size()) return "";
  const std::uint64_t here = world[static_cast<std::size_t>(self)].host;
  std::vector<std::string> exited;
  int running = 0, elsewhere = 0;
  for (int member : members) {
    if (member == self || member < 0 || static_cast<std::size_t>(member) >= world.size()) continue;
    const ProcessId& peer = world[static_cast<std::size_t>(member)];
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
