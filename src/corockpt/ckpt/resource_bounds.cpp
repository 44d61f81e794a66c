#include "corockpt/ckpt/resource_bounds.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "corockpt/ckpt/detail/owned_tensors.hpp"
#include "corockpt/runtime/memory_limits.hpp"
#include "corockpt/runtime/process_id.hpp"

namespace corockpt {

namespace {

// "22.38 GiB", "10.91 TiB".
std::string gib(std::uint64_t bytes) {
  const bool tera = bytes >= (1ull << 40);
  char text[48];
  std::snprintf(text, sizeof text, "%.2f %s", static_cast<double>(bytes) / (tera ? 1ull << 40 : 1ull << 30),
                tera ? "TiB" : "GiB");
  return text;
}

struct Largest {
  std::string name;
  std::uint64_t bytes = 0;
};

// Model::allocate's total on this rank (saturating) and its largest tensor.
std::uint64_t memory_need(const Model& model, Largest& largest) {
  std::uint64_t total = 0;
  detail::for_each_owned_tensor(model.instances(), [&](const std::string& name, DType dtype,
                                                       const std::vector<std::int64_t>& shape, const TensorView&) {
    const std::uint64_t bytes = static_cast<std::uint64_t>(numel(shape)) * size_of(dtype);
    total = bytes > UINT64_MAX - total ? UINT64_MAX : total + bytes;
    if (bytes > largest.bytes) largest = {name, bytes};
  });
  return total;
}

}  // namespace

Result<void> check_ranks_in_process(int ranks) {
  if (ranks <= max_ranks_in_process) return {};
  return fail(Errc::invalid_argument,
              std::to_string(ranks) + " ranks in one process: at most " + std::to_string(max_ranks_in_process) +
                  " run in-process (the local backend); run a larger world one process per rank (mpirun)",
              {.operation = "check ranks"});
}

namespace detail {

namespace {

std::uint64_t add(std::uint64_t a, std::uint64_t b) { return b > UINT64_MAX - a ? UINT64_MAX : a + b; }

// "3 ranks: 0, 1, 2" (the first 8).
std::string rank_list(const std::vector<std::size_t>& ranks) {
  std::string text = std::to_string(ranks.size()) + (ranks.size() == 1 ? " rank: " : " ranks: ");
  for (std::size_t i = 0; i < ranks.size() && i < 8; ++i) text += (i ? ", " : "") + std::to_string(ranks[i]);
  return text + (ranks.size() > 8 ? ", ..." : "");
}

}  // namespace

std::optional<std::string> memory_shortfall(std::span<const RankMemory> ranks, const ProcessId& me) {
  // Processes first (their own limits: cgroup, RLIMIT_AS), then machines (MemAvailable,
  // shared by all their processes); groups in the order of their first rank.
  for (const bool machine : {false, true}) {
    std::vector<bool> counted(ranks.size(), false);
    for (std::size_t first = 0; first < ranks.size(); ++first) {
      if (counted[first]) continue;
      auto same = [&](const RankMemory& r) {
        return machine ? r.process.host == ranks[first].process.host : r.process == ranks[first].process;
      };
      std::uint64_t need = 0, has = UINT64_MAX;
      std::vector<std::size_t> members;
      for (std::size_t r = first; r < ranks.size(); ++r) {
        if (!same(ranks[r])) continue;
        counted[r] = true;
        need = add(need, ranks[r].need);
        has = std::min(has, machine ? ranks[r].machine_available : ranks[r].headroom);
        members.push_back(r);
      }
      if (need <= has) continue;
      const bool here = machine ? me.host == ranks[first].process.host : me == ranks[first].process;
      const std::string where = machine ? (here ? "this machine" : "the machine of rank " + std::to_string(first))
                                        : (here ? "this process" : "the process of rank " + std::to_string(first));
      return "the model needs " + gib(need) + " of host memory in " + where + " (" + rank_list(members) +
             ") but it may take only " + gib(has) + " more" + (machine ? " (MemAvailable, shared by its processes)" : "");
    }
  }
  return std::nullopt;
}

}  // namespace detail

Task<void> check_memory_before_allocating(const Model& model) {
  Largest largest;
  const MemoryHeadroom headroom = memory_headroom();
  const detail::RankMemory mine{this_process_id(), memory_need(model, largest), headroom.bytes,
                                headroom.machine_available};
  Communicator& world = *model.world();
  std::vector<detail::RankMemory> all(static_cast<std::size_t>(world.size()));
  auto gathered = co_await world.all_gather(std::as_bytes(std::span(&mine, 1)), std::as_writable_bytes(std::span(all)));
  if (!gathered) co_return fail(gathered.error().with_rank(model.rank()));
  auto shortfall = detail::memory_shortfall(all, mine.process);
  if (!shortfall) co_return Result<void>{};
  std::string message = std::move(*shortfall);
  if (message.find("this process") != std::string::npos) message += " (" + headroom.source + ")";
  if (!largest.name.empty()) {
    message += "; rank " + std::to_string(model.rank()) + "'s largest tensor is \"" + largest.name + "\", " +
               gib(largest.bytes);
  }
  co_return fail(Errc::no_memory, std::move(message), {.rank = model.rank(), .operation = "check memory"});
}

}  // namespace corockpt
