#pragma once
/// @file
/// The `local` communicator plugin: ranks are coroutines of this process (typically each
/// rank's coroutines on its own strand from `Runtime::make_strand()`), and bytes move by
/// memcpy. The test double of every multi-rank test and the embedded default.
///
/// How it behaves, beyond `Communicator`'s promises:
/// - A collective completes when the last rank of the group arrives; that rank copies
///   the bytes for everyone. Its deadline runs from when a rank arrives.
/// - Arguments are checked at the rendezvous, against every rank's: a mistake on one rank
///   (a wrong size, a different root, a different operation) fails the collective on all
///   ranks with Errc::invalid_argument, and the group stays usable.
/// - A send completes only when a matching recv has taken its bytes (no hidden copy).
/// - When one rank gives up on an operation (deadline or cancellation), the whole group
///   is broken, on every rank: the ranks waiting in that collective fail with its error,
///   which names the ranks that did not arrive, and every other operation of the group,
///   pending or later, fails with Errc::unavailable. Groups split from it, and the group
///   it was split from, are not affected.

#include <memory>
#include <vector>

#include "corockpt/plugins/comm/communicator.hpp"
#include "corockpt/runtime/runtime.hpp"

namespace corockpt {

/// Makes a world of `world_size` ranks, named "world".
/// @returns one communicator per rank, indexed by rank; Errc::invalid_argument when
///   `world_size` < 1. `options` (deadline, injected latency) apply to every operation
///   of every rank and are inherited by split groups.
Result<std::vector<std::shared_ptr<Communicator>>> make_local_world(Runtime& runtime, int world_size,
                                                                    CommOptions options = {});

}  // namespace corockpt
