#pragma once
/// @file
/// Which process each rank of an MPI job is, so that a rank whose collective timed out can
/// say which peers have died: MPI itself cannot tell which rank did not arrive. Only peers
/// on the same host (same boot, same pid namespace) can be checked; the others are
/// counted as unknown.

#include <span>
#include <string>

#include "corockpt/runtime/process_id.hpp"

namespace corockpt::mpi_detail {

/// What a timeout's message adds about `members` (world ranks) other than `self`:
/// "world rank 1 (pid 2880, this host) has exited", or that those on this host are all
/// running, and how many on other hosts could not be checked.
std::string describe_peers(std::span<const ProcessId> world, std::span<const int> members, int self);

}  // namespace corockpt::mpi_detail
