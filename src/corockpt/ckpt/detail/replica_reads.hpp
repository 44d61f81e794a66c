#pragma once
/// @file
/// Reading replicated chunks once per group of replicas (LoadOptions::replicas): ranks
/// that load the same box of the same tensor (HSDP's replicas, buffers, Adam's `step`)
/// elect one of them to read it; it passes the bytes on to the others over the
/// communicator after the reads.
///
/// The plan is a collective: every rank sends a 128-bit digest of each of its targets
/// (name, dtype, box) and its byte count; every rank then computes the same groups and
/// readers (each group's reader is the member with the fewest bytes assigned so far,
/// ties to the lowest rank, so reads spread over the replicas). Transfers between two
/// ranks form one sequence both sides walk in the same order, 4 messages at a time on
/// tags of their own (no deadlock, latency hidden): targets of 64 KiB or more go
/// straight from and into their memory, smaller ones are packed into messages of up to
/// 4 MiB (the only memory this adds: at most 4 packs per peer at a time).

#include <cstddef>
#include <span>
#include <vector>

#include "corockpt/ckpt/local_chunks.hpp"
#include "corockpt/plugins/comm/communicator.hpp"

namespace corockpt::detail {

struct ReplicaMessage {
  int peer = 0;
  bool send = false;                ///< this rank sends it (it read the targets)
  std::vector<std::size_t> targets;  ///< indices into the targets, packed in this order
  bool packed = true;               ///< false: one target, moved straight from or into its memory
};

struct ReplicaPlan {
  std::vector<bool> read_here;  ///< per target: this rank reads it
  /// Per peer with transfers, the messages with it in the order both sides walk them.
  std::vector<std::vector<ReplicaMessage>> sequences;
};

/// The collective plan over `comm` for `targets`; those with `eligible[i]` false are read
/// by this rank whatever the others hold (not in the checkpoint, another memory space).
Task<ReplicaPlan> plan_replica_reads(Communicator& comm, std::span<const LocalChunk> targets,
                                     const std::vector<bool>& eligible);

/// After every rank read its part: passes the replicas on as `plan` says.
Task<void> pass_replicas(Communicator& comm, std::span<LocalChunk> targets, const ReplicaPlan& plan);

}  // namespace corockpt::detail
