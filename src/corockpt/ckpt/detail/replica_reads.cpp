#include "corockpt/ckpt/detail/replica_reads.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <tuple>

#include "corockpt/runtime/when_all.hpp"

namespace corockpt::detail {

namespace {

// Matches the transfers of a load's replica pass apart from other point-to-point traffic.
constexpr int replica_tag = 4242;
// Targets smaller than this travel packed, in messages of up to pack_bytes.
constexpr std::size_t direct_bytes = 64 << 10;
constexpr std::size_t pack_bytes = 4 << 20;
// Messages in flight with one peer (latency hides behind the others).
constexpr std::size_t messages_in_flight = 4;

// What one rank sends for each eligible target: who it is (a 128-bit digest of its name,
// dtype and box) and its size.
struct TargetKey {
  std::uint64_t digest[2] = {0, 0};
  std::uint64_t bytes = 0;
  auto tie() const { return std::tie(digest[0], digest[1], bytes); }
  bool operator<(const TargetKey& other) const { return tie() < other.tie(); }
};

std::uint64_t fnv1a64(std::string_view text, std::uint64_t basis) {
  std::uint64_t h = basis;
  for (const char c : text) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

TargetKey key_of(const LocalChunk& target) {
  const std::string text = target.name + '\0' + std::string(to_string(target.dtype)) + '\0' + target.box.to_string();
  return {{fnv1a64(text, 0xcbf29ce484222325ull), fnv1a64(text, 0x84222325cbf29ce4ull)}, target.bytes.size()};
}

// Every rank's keys, in rank order.
Task<std::vector<std::vector<TargetKey>>> gather_keys(Communicator& comm, const std::vector<TargetKey>& mine) {
  const auto size = static_cast<std::size_t>(comm.size());
  std::vector<std::uint64_t> counts(size);
  const std::uint64_t my_count = mine.size();
  const auto count_bytes = std::as_bytes(std::span(&my_count, 1));
  if (auto ok = co_await comm.all_gather(count_bytes, std::as_writable_bytes(std::span(counts))); !ok) {
    co_return fail(ok.error());
  }
  std::vector<std::size_t> byte_counts(size);
  std::size_t total = 0;
  for (std::size_t r = 0; r < size; ++r) total += byte_counts[r] = counts[r] * sizeof(TargetKey);
  std::vector<TargetKey> all(total / sizeof(TargetKey));
  const auto send = std::as_bytes(std::span(mine));
  if (auto ok = co_await comm.all_gather_v(send, std::as_writable_bytes(std::span(all)), byte_counts); !ok) {
    co_return fail(ok.error());
  }
  std::vector<std::vector<TargetKey>> by_rank(size);
  std::size_t at = 0;
  for (std::size_t r = 0; r < size; ++r) {
    by_rank[r].assign(all.begin() + static_cast<std::ptrdiff_t>(at),
                      all.begin() + static_cast<std::ptrdiff_t>(at + counts[r]));
    at += counts[r];
  }
  co_return by_rank;
}

// One transfer of a target between its reader and another holder.
struct Transfer {
  TargetKey key;
  int from = 0;
  int to = 0;
};

// The messages of one peer's sequence: runs of small transfers in one direction packed.
std::vector<ReplicaMessage> messages_with(int me, int peer, const std::vector<Transfer>& transfers,
                                          const std::map<TargetKey, std::size_t>& my_index) {
  std::vector<ReplicaMessage> messages;
  std::size_t packed = 0;
  for (const Transfer& t : transfers) {
    const bool send = t.from == me;
    const std::size_t index = my_index.at(t.key);
    const bool direct = t.key.bytes >= direct_bytes;
    ReplicaMessage* last = messages.empty() ? nullptr : &messages.back();
    if (!direct && last && last->packed && last->send == send && packed + t.key.bytes <= pack_bytes) {
      last->targets.push_back(index);
      packed += t.key.bytes;
      continue;
    }
    messages.push_back({.peer = peer, .send = send, .targets = {index}, .packed = !direct});
    packed = t.key.bytes;
  }
  return messages;
}

// One message of a sequence, sent from or received into the targets.
Task<void> move_message(Communicator& comm, std::span<LocalChunk> targets, const ReplicaMessage& message, int tag) {
  if (!message.packed) {
    std::span<std::byte> bytes = targets[message.targets.front()].bytes;
    if (message.send) co_return co_await comm.send(bytes, message.peer, tag);
    co_return co_await comm.recv(bytes, message.peer, tag);
  }
  std::size_t size = 0;
  for (std::size_t i : message.targets) size += targets[i].bytes.size();
  std::vector<std::byte> pack(size);
  if (message.send) {
    std::size_t at = 0;
    for (std::size_t i : message.targets) {
      std::memcpy(pack.data() + at, targets[i].bytes.data(), targets[i].bytes.size());
      at += targets[i].bytes.size();
    }
    co_return co_await comm.send(pack, message.peer, tag);
  }
  if (auto ok = co_await comm.recv(pack, message.peer, tag); !ok) co_return fail(ok.error());
  std::size_t at = 0;
  for (std::size_t i : message.targets) {
    std::memcpy(targets[i].bytes.data(), pack.data() + at, targets[i].bytes.size());
    at += targets[i].bytes.size();
  }
  co_return Result<void>{};
}

// One peer's sequence, `messages_in_flight` messages at a time, each on a tag of its own
// within the group (both sides group alike, so sends and receives match).
Task<void> walk_sequence(Communicator& comm, std::span<LocalChunk> targets, const std::vector<ReplicaMessage>& sequence) {
  for (std::size_t first = 0; first < sequence.size(); first += messages_in_flight) {
    std::vector<Task<void>> group;
    for (std::size_t i = first; i < std::min(sequence.size(), first + messages_in_flight); ++i) {
      group.push_back(move_message(comm, targets, sequence[i], replica_tag + static_cast<int>(i - first)));
    }
    if (auto ok = all_ok(co_await when_all(std::move(group))); !ok) co_return fail(ok.error());
  }
  co_return Result<void>{};
}

}  // namespace

Task<ReplicaPlan> plan_replica_reads(Communicator& comm, std::span<const LocalChunk> targets,
                                     const std::vector<bool>& eligible) {
  const int me = comm.rank();
  // A box this rank holds twice is read for each (it is not offered to the others).
  std::map<TargetKey, std::vector<std::size_t>> held;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    if (eligible[i]) held[key_of(targets[i])].push_back(i);
  }
  std::vector<TargetKey> mine;
  std::map<TargetKey, std::size_t> my_index;
  for (const auto& [key, indices] : held) {
    if (indices.size() != 1) continue;
    mine.push_back(key);
    my_index.emplace(key, indices.front());
  }
  auto by_rank = co_await gather_keys(comm, mine);
  if (!by_rank) co_return fail(by_rank.error());

  // Each key's holders (ascending ranks), then its reader: the least loaded holder.
  std::map<TargetKey, std::vector<int>> holders;
  for (int r = 0; r < comm.size(); ++r) {
    for (const TargetKey& key : (*by_rank)[static_cast<std::size_t>(r)]) holders[key].push_back(r);
  }
  std::vector<std::uint64_t> assigned(static_cast<std::size_t>(comm.size()), 0);
  std::map<int, std::vector<Transfer>> with_peer;  // this rank's transfers, in key order
  ReplicaPlan plan{.read_here = std::vector<bool>(targets.size(), true)};
  for (const auto& [key, ranks] : holders) {
    if (ranks.size() < 2) continue;
    const int reader = *std::ranges::min_element(ranks, {}, [&](int r) { return assigned[static_cast<std::size_t>(r)]; });
    assigned[static_cast<std::size_t>(reader)] += key.bytes;
    const bool holds = my_index.contains(key);
    if (!holds) continue;
    if (reader != me) {
      plan.read_here[my_index.at(key)] = false;
      with_peer[reader].push_back({key, reader, me});
    } else {
      for (int r : ranks) {
        if (r != me) with_peer[r].push_back({key, me, r});
      }
    }
  }
  for (const auto& [peer, transfers] : with_peer) plan.sequences.push_back(messages_with(me, peer, transfers, my_index));
  co_return plan;
}

Task<void> pass_replicas(Communicator& comm, std::span<LocalChunk> targets, const ReplicaPlan& plan) {
  std::vector<Task<void>> walks;
  for (const auto& sequence : plan.sequences) walks.push_back(walk_sequence(comm, targets, sequence));
  co_return all_ok(co_await when_all(std::move(walks)));
}

}  // namespace corockpt::detail
