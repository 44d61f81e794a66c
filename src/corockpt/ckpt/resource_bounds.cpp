#include "corockpt/ckpt/resource_bounds.hpp"

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

// What each rank tells the others.
struct RankMemory {
  ProcessId process;
  std::uint64_t need = 0;
  std::uint64_t headroom = 0;
};

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

Task<void> check_memory_before_allocating(const Model& model) {
  Largest largest;
  const MemoryHeadroom headroom = memory_headroom();
  const RankMemory mine{this_process_id(), memory_need(model, largest), headroom.bytes};
  Communicator& world = *model.world();
  std::vector<RankMemory> all(static_cast<std::size_t>(world.size()));
  auto gathered = co_await world.all_gather(std::as_bytes(std::span(&mine, 1)), std::as_writable_bytes(std::span(all)));
  if (!gathered) co_return fail(gathered.error().with_rank(model.rank()));

  // Every rank walks the same list in rank order, so all find the same process short.
  std::vector<bool> counted(all.size(), false);
  for (std::size_t first = 0; first < all.size(); ++first) {
    if (counted[first]) continue;
    std::uint64_t need = 0;
    std::string ranks;
    int members = 0;
    for (std::size_t r = first; r < all.size(); ++r) {
      if (!(all[r].process == all[first].process)) continue;
      counted[r] = true;
      need = all[r].need > UINT64_MAX - need ? UINT64_MAX : need + all[r].need;
      if (members++ < 8) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
    }
    if (members > 8) ranks += ", ...";
    if (need <= all[first].headroom) continue;
    const bool here = all[first].process == mine.process;
    std::string message = "the model needs " + gib(need) + " of host memory in " +
                          (here ? std::string("this process") : "the process of rank " + std::to_string(first)) +
                          " (" + std::to_string(members) + (members == 1 ? " rank: " : " ranks: ") + ranks +
                          ") but it may take only " + gib(all[first].headroom) + " more";
    if (here) message += " (" + headroom.source + ")";
    if (!largest.name.empty()) {
      message += "; rank " + std::to_string(model.rank()) + "'s largest tensor is \"" + largest.name + "\", " +
                 gib(largest.bytes);
    }
    co_return fail(Errc::no_memory, std::move(message), {.rank = model.rank(), .operation = "check memory"});
  }
  co_return Result<void>{};
}

}  // namespace corockpt
