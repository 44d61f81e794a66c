#pragma once
/// @file
/// Which process each rank of an MPI job is, so that a rank whose collective timed out can
/// say which peers have died: MPI itself cannot tell which rank did not arrive. Only peers
/// on the same host (same boot, same pid namespace) can be checked; the others are
/// counted as unknown.

#include <cstdint>
#include <span>
#include <string>

namespace corockpt::mpi_detail {

struct PeerProcess {
  std::uint64_t host = 0;  ///< a hash of the host name, its boot id and the pid namespace
  std::int64_t pid = 0;
};

/// This process, as its peers will see it.
PeerProcess this_process();

/// What a timeout's message adds about `members` (world ranks) other than `self`:
/// "world rank 1 (pid 2880, this host) has exited", or that those on this host are all
/// running, and how many on other hosts could not be checked.
std::string describe_peers(std::span<const PeerProcess> world, std::span<const int> members, int self);

}  // namespace corockpt::mpi_detail
