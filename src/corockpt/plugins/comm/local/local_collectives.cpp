#include "corockpt/plugins/comm/local/local_collectives.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <numeric>

#include "corockpt/plugins/comm/local/local_group.hpp"

namespace corockpt::local_comm {

namespace {

// memmove: a rank may pass its own slot of `recv` as `send` (in place).
void copy_bytes(std::byte* to, std::span<const std::byte> from) {
  if (!from.empty()) std::memmove(to, from.data(), from.size());
}

std::unexpected<Error> mismatch(const LocalGroup& group, CollectiveKind kind, int rank, const std::string& what) {
  return fail(Errc::invalid_argument,
              std::string(to_string(kind)) + " on " + group.name() + ": rank " + std::to_string(rank) + " " + what,
              {.rank = rank, .operation = std::string(to_string(kind))});
}

std::string bytes(std::size_t n) { return std::to_string(n) + " bytes"; }

// The same `counts` on every rank, one per rank, and each rank sends its own count.
Result<std::size_t> check_counts(std::span<Contribution> parts, const LocalGroup& group) {
  const auto kind = parts[0].kind;
  const auto& first = parts[0].counts;
  for (std::size_t r = 0; r < parts.size(); ++r) {
    const auto& counts = parts[r].counts;
    const int rank = static_cast<int>(r);
    if (counts.size() != parts.size()) {
      return mismatch(group, kind, rank, "passed " + std::to_string(counts.size()) + " counts for " +
                                             std::to_string(parts.size()) + " ranks");
    }
    if (!std::equal(counts.begin(), counts.end(), first.begin())) {
      return mismatch(group, kind, rank, "passed counts that differ from rank 0's");
    }
    if (parts[r].send.size() != counts[r]) {
      return mismatch(group, kind, rank, "sends " + bytes(parts[r].send.size()) + " but its count is " +
                                             std::to_string(counts[r]));
    }
  }
  return std::accumulate(first.begin(), first.end(), std::size_t{0});
}

Result<void> check_root(std::span<Contribution> parts, const LocalGroup& group) {
  const int root = parts[0].root;
  for (std::size_t r = 0; r < parts.size(); ++r) {
    if (parts[r].root != root) {
      return mismatch(group, parts[0].kind, static_cast<int>(r),
                      "names root " + std::to_string(parts[r].root) + " where rank 0 names " + std::to_string(root));
    }
  }
  if (root < 0 || root >= group.size()) {
    return mismatch(group, parts[0].kind, 0, "names root " + std::to_string(root) + ", outside 0.." +
                                                 std::to_string(group.size() - 1));
  }
  return {};
}

Result<void> all_gather(std::span<Contribution> parts, const LocalGroup& group) {
  const std::size_t each = parts[0].send.size();
  for (std::size_t r = 0; r < parts.size(); ++r) {
    const int rank = static_cast<int>(r);
    if (parts[r].send.size() != each) {
      return mismatch(group, CollectiveKind::all_gather, rank,
                      "sends " + bytes(parts[r].send.size()) + " where rank 0 sends " + bytes(each));
    }
    if (parts[r].recv.size() != each * parts.size()) {
      return mismatch(group, CollectiveKind::all_gather, rank,
                      "receives into " + bytes(parts[r].recv.size()) + ", needs " + bytes(each * parts.size()));
    }
  }
  for (auto& to : parts) {
    for (std::size_t from = 0; from < parts.size(); ++from) copy_bytes(to.recv.data() + from * each, parts[from].send);
  }
  return {};
}

Result<void> all_gather_v(std::span<Contribution> parts, const LocalGroup& group) {
  auto total = check_counts(parts, group);
  if (!total) return fail(total.error());
  for (std::size_t r = 0; r < parts.size(); ++r) {
    if (parts[r].recv.size() != *total) {
      return mismatch(group, CollectiveKind::all_gather_v, static_cast<int>(r),
                      "receives into " + bytes(parts[r].recv.size()) + ", needs " + bytes(*total));
    }
  }
  for (auto& to : parts) {
    std::size_t offset = 0;
    for (auto& from : parts) {
      copy_bytes(to.recv.data() + offset, from.send);
      offset += from.send.size();
    }
  }
  return {};
}

Result<void> gather_v(std::span<Contribution> parts, const LocalGroup& group) {
  if (auto ok = check_root(parts, group); !ok) return ok;
  auto total = check_counts(parts, group);
  if (!total) return fail(total.error());
  auto& root = parts[static_cast<std::size_t>(parts[0].root)];
  if (root.recv.size() != *total) {
    return mismatch(group, CollectiveKind::gather_v, root.root,
                    "(the root) receives into " + bytes(root.recv.size()) + ", needs " + bytes(*total));
  }
  std::size_t offset = 0;
  for (auto& from : parts) {
    copy_bytes(root.recv.data() + offset, from.send);
    offset += from.send.size();
  }
  return {};
}

Result<void> broadcast(std::span<Contribution> parts, const LocalGroup& group) {
  if (auto ok = check_root(parts, group); !ok) return ok;
  const auto& root = parts[static_cast<std::size_t>(parts[0].root)];
  for (std::size_t r = 0; r < parts.size(); ++r) {
    if (parts[r].recv.size() != root.recv.size()) {
      return mismatch(group, CollectiveKind::broadcast, static_cast<int>(r),
                      "has " + bytes(parts[r].recv.size()) + " where the root has " + bytes(root.recv.size()));
    }
  }
  for (auto& to : parts) {
    if (&to != &root) copy_bytes(to.recv.data(), root.recv);
  }
  return {};
}

Result<void> split(std::span<Contribution> parts, const LocalGroup& group) {
  std::map<int, std::vector<int>> members;  // color -> parent ranks, sorted by (key, rank) below
  for (std::size_t r = 0; r < parts.size(); ++r) {
    if (parts[r].color < 0) {
      return mismatch(group, CollectiveKind::split, static_cast<int>(r),
                      "passes color " + std::to_string(parts[r].color) + "; colors are >= 0");
    }
    members[parts[r].color].push_back(static_cast<int>(r));
  }
  for (auto& [color, ranks] : members) {
    std::stable_sort(ranks.begin(), ranks.end(), [&](int a, int b) {
      return parts[static_cast<std::size_t>(a)].key < parts[static_cast<std::size_t>(b)].key;
    });
    std::vector<int> world_ranks;
    for (int r : ranks) world_ranks.push_back(group.world_rank(r));
    auto made = std::make_shared<LocalGroup>(group.name() + "/split(" + std::to_string(color) + ")",
                                             std::move(world_ranks));
    for (std::size_t new_rank = 0; new_rank < ranks.size(); ++new_rank) {
      *parts[static_cast<std::size_t>(ranks[new_rank])].split_outcome = {made, static_cast<int>(new_rank)};
    }
  }
  return {};
}

}  // namespace

std::string_view to_string(CollectiveKind kind) {
  switch (kind) {
    case CollectiveKind::all_gather: return "all_gather";
    case CollectiveKind::all_gather_v: return "all_gather_v";
    case CollectiveKind::gather_v: return "gather_v";
    case CollectiveKind::broadcast: return "broadcast";
    case CollectiveKind::barrier: return "barrier";
    case CollectiveKind::split: return "split";
  }
  return "collective";
}

Result<void> carry_out(std::span<Contribution> contributions, const LocalGroup& group) {
  const auto kind = contributions[0].kind;
  for (std::size_t r = 1; r < contributions.size(); ++r) {
    if (contributions[r].kind != kind) {
      return mismatch(group, contributions[r].kind, static_cast<int>(r),
                      "issued it where rank 0 issued " + std::string(to_string(kind)) +
                          " (every rank must issue a group's operations in the same order)");
    }
  }
  switch (kind) {
    case CollectiveKind::all_gather: return all_gather(contributions, group);
    case CollectiveKind::all_gather_v: return all_gather_v(contributions, group);
    case CollectiveKind::gather_v: return gather_v(contributions, group);
    case CollectiveKind::broadcast: return broadcast(contributions, group);
    case CollectiveKind::barrier: return {};
    case CollectiveKind::split: return split(contributions, group);
  }
  return fail(Errc::internal, "unknown collective");
}

}  // namespace corockpt::local_comm
