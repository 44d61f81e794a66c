#include "corockpt/ckpt/detail/rank_plan.hpp"

#include <algorithm>
#include <optional>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <string_view>
#include <tuple>
#include <unordered_map>

#include "corockpt/ckpt/detail/parallel_parts.hpp"
#include "corockpt/ckpt/detail/shard_rows.hpp"
#include "corockpt/ckpt/format/binary_codec.hpp"
#include "corockpt/ckpt/format/checked_size.hpp"

namespace corockpt::detail {

namespace {

constexpr std::string_view kPlanMagic = "CRKPLAN1";
// A plan whose layout the coordinator has from an earlier save: its digest stands in for it.
constexpr std::string_view kCachedMagic = "CRKPLANC";

std::uint64_t layout_digest_of(std::string_view layout) { return fnv1a64(layout); }

// A plan's parts: its rank, and its layout (empty in a cached plan, whose digest says
// which) and variable section.
struct PlanParts {
  bool cached = false;
  bool valid = false;
  int rank = 0;
  std::uint64_t digest = 0;
  std::string_view layout;
  std::string_view variable;
};

PlanParts plan_parts(std::string_view plan) {
  PlanParts parts;
  ByteReader in(plan);
  const std::string_view magic = in.raw(kPlanMagic.size());
  if (magic != kPlanMagic && magic != kCachedMagic) return parts;
  parts.cached = magic == kCachedMagic;
  parts.rank = static_cast<int>(in.varint());
  // The sender's digest of its layout, not the coordinator's: hashing every plan again
  // (1.3 GB at 8192 ranks) was the larger part of the merge.
  parts.digest = in.fixed<std::uint64_t>();
  if (!parts.cached) parts.layout = in.raw(in.varint());
  parts.variable = plan.substr(std::min(in.at(), plan.size()));
  parts.valid = !in.failed;
  return parts;
}

// A plan's variable section, decoded.
struct Variable {
  std::uint64_t data_bytes = 0;
  std::vector<std::pair<std::string, ObjectRecord>> objects;
  std::vector<std::pair<std::string, std::uint64_t>> object_files;
  std::vector<std::uint32_t> whole_crcs;
};

std::optional<Variable> read_variable(std::string_view bytes) {
  Variable out;
  ByteReader in(bytes);
  out.data_bytes = in.varint();
  const std::uint64_t objects = in.varint();
  for (std::uint64_t o = 0; o < objects && !in.failed; ++o) {
    std::string name(in.text());
    ObjectRecord object{std::string(in.text()), in.varint(), in.varint(), {}};
    const std::uint64_t sums = in.varint();
    if (sums > in.left()) return std::nullopt;
    for (std::uint64_t s = 0; s < sums; ++s) object.crc32c.push_back(in.fixed<std::uint32_t>());
    out.objects.emplace_back(std::move(name), std::move(object));
  }
  const std::uint64_t files = in.varint();
  for (std::uint64_t f = 0; f < files && !in.failed; ++f) {
    std::string name(in.text());
    out.object_files.emplace_back(std::move(name), in.varint());
  }
  const std::uint64_t crcs = in.varint();
  if (crcs > in.left()) return std::nullopt;
  out.whole_crcs.resize(crcs);
  for (auto& crc : out.whole_crcs) crc = in.fixed<std::uint32_t>();
  if (in.failed || !in.done()) return std::nullopt;
  return out;
}

bool at_origin(const Box& box) {
  return std::ranges::all_of(box.offsets, [](std::int64_t o) { return o == 0; });
}

std::string hash_text(std::uint64_t hash) {
  char text[24];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(hash));
  return text;
}

// A tensor as the merge gathers it: what is read rarely (once per tensor, on errors).
struct Slot {
  std::uint64_t hash = 0;
  std::string name;  // empty until a rank names it
  bool named = false;
  DType dtype = DType::float32;
  std::vector<std::int64_t> shape;
  std::vector<ChunkRun> runs;  // closed: the next chunk does not extend them
  std::optional<WholeChunk> whole;
  int first_rank = 0;            // the first rank that listed it
  int conflict_rank = -1;        // a rank that listed it with another dtype or shape
  std::string other_name;        // a second name of the same hash
};

// ... and what is read for every chunk, tens of millions of times at thousands of ranks:
// small, apart from the rest, holding the run the next chunk may extend with its dims
// other than the run's as a digest.
struct HotSlot {
  std::uint64_t hash = 0;          // the name's
  std::uint32_t next = ~0u;        // the slot that followed this one in the last plan holding both
  std::uint64_t shape_digest = 0;  // of dtype and shape
  std::uint64_t rest_digest = 0;   // of open's rest
  std::int64_t extent = 0;         // open's dim's
  ChunkRun open{.count = 0};       // count 0: none
};

std::uint64_t mix(std::uint64_t digest, std::uint64_t value) {
  digest ^= value + 0x9e3779b97f4a7c15ull + (digest << 6) + (digest >> 2);
  return digest * 0xff51afd7ed558ccdull;
}

std::uint64_t rest_digest(const ChunkRun& run) {
  std::uint64_t digest = run.rest_offsets.size();
  for (std::size_t d = 0; d < run.rest_offsets.size(); ++d) {
    digest = mix(mix(digest, static_cast<std::uint64_t>(run.rest_offsets[d])), static_cast<std::uint64_t>(run.rest_sizes[d]));
  }
  return digest;
}

// Open addressing on the name hash, the hash kept in the table so a probe touches
// nothing else.
class SlotTable {
 public:
  explicit SlotTable(std::size_t expected) {
    std::size_t size = 1024;
    while (size < 2 * expected) size *= 2;
    table_.resize(size);
  }
  std::uint32_t find_or_add(std::uint64_t hash, bool& added) {
    if ((count_ + 1) * 2 > table_.size()) grow();
    std::size_t at = hash & (table_.size() - 1);
    while (table_[at].index != 0) {
      if (table_[at].hash == hash) {
        added = false;
        return table_[at].index - 1;
      }
      at = (at + 1) & (table_.size() - 1);
    }
    table_[at] = {hash, static_cast<std::uint32_t>(++count_)};
    added = true;
    return count_ - 1;
  }

 private:
  struct Entry {
    std::uint64_t hash = 0;
    std::uint32_t index = 0;  // slot + 1; 0 is empty
  };
  void grow() {
    std::vector<Entry> table(table_.size() * 4);
    for (const Entry& entry : table_) {
      if (entry.index == 0) continue;
      std::size_t at = entry.hash & (table.size() - 1);
      while (table[at].index != 0) at = (at + 1) & (table.size() - 1);
      table[at] = entry;
    }
    table_ = std::move(table);
  }
  std::vector<Entry> table_;
  std::uint32_t count_ = 0;
};

// Runs that arrived out of order (plans not in rank order, writers not ascending with
// the rows) sorted and extended where they continue each other. In rank order FSDP's
// shards arrive as one run already, and this is never reached.
void compact(std::vector<ChunkRun>& runs, std::span<const std::int64_t> shape) {
  std::ranges::sort(runs, [](const ChunkRun& a, const ChunkRun& b) {
    return std::tie(a.dim, a.rest_offsets, a.rest_sizes, a.start) < std::tie(b.dim, b.rest_offsets, b.rest_sizes, b.start);
  });
  std::vector<ChunkRun> out;
  for (ChunkRun& run : runs) {
    if (out.empty() || !extend_run(out.back(), run, shape)) out.push_back(std::move(run));
  }
  runs = std::move(out);
}

// A rank's sizes and objects added to the save's (its whole tensors' checksums apart):
// each object written once.
Result<void> add_variable(Variable& variable, int rank, std::uint64_t& data_bytes,
                          std::map<std::string, ObjectRecord>& objects, std::map<std::string, std::uint64_t>& files) {
  data_bytes += variable.data_bytes;
  for (auto& [name, object] : variable.objects) {
    if (!objects.try_emplace(name, std::move(object)).second) {
      return fail(Errc::invalid_argument,
                  "rank " + std::to_string(rank) + " wrote object " + name + ", which another rank wrote too",
                  {.fqn = name, .operation = "save"});
    }
  }
  for (auto& [name, size] : variable.object_files) files[name] = size;
  return {};
}

Error plan_error(int rank, const std::string& what) {
  return Error{Errc::internal, "rank " + std::to_string(rank) + "'s plan does not parse: " + what, {}, 0}.with_operation(
      "save");
}

}  // namespace

std::string save_id_of(const std::string& tmp) {
  const auto slash = tmp.find_last_of('/');
  const std::string name = slash == std::string::npos ? tmp : tmp.substr(slash + 1);
  const auto suffix = name.rfind(".tmp-");
  return suffix == std::string::npos ? name : name.substr(suffix + 5);
}

RankPlan rank_plan(std::span<const LocalChunk> chunks, int rank, std::string save_id,
                   std::span<const DataFileLayout> layout, std::vector<std::vector<WrittenChunk>> written,
                   RankObjects objects) {
  RankPlan out;
  out.index.rank = rank;
  out.index.save_id = std::move(save_id);
  std::uint64_t data_bytes = 0;
  // Per tensor this rank lists, in first-listed order: the runs of what it wrote.
  struct Listed {
    const LocalChunk* chunk;
    bool named = false;
    std::vector<ChunkRun> runs;
    std::optional<WholeChunk> whole;  // written here in one chunk
  };
  std::vector<Listed> listed;
  std::unordered_map<std::string_view, std::size_t> position;
  for (const LocalChunk& chunk : chunks) {
    auto [it, fresh] = position.try_emplace(chunk.name, listed.size());
    if (fresh) listed.push_back({&chunk, numel(chunk.shape) == 0, {}});
  }
  for (std::size_t k = 0; k < layout.size(); ++k) {
    auto& ranges = written[k];
    const std::uint64_t size = ranges.empty() ? layout[k].header.size() : ranges.back().end;
    out.index.files.push_back({layout[k].name, size});
    data_bytes += size;
    for (std::size_t c = 0; c < layout[k].chunks.size(); ++c) {
      const LocalChunk& chunk = chunks[layout[k].chunks[c]];
      out.index.chunks.push_back({name_hash(chunk.name), chunk.box, static_cast<std::uint32_t>(k), ranges[c].begin,
                                  ranges[c].end, std::move(ranges[c].crc32c)});
      Listed& entry = listed[position.at(chunk.name)];
      entry.named = entry.named || at_origin(chunk.box);
      entry.runs.push_back(run_of(chunk.box, chunk.shape, rank));
      // A small tensor saved whole (at most one checksum block: the tensor index stays
      // small however large the model).
      if (const auto& placed = out.index.chunks.back(); chunk.box.sizes == chunk.shape && placed.crc32c.size() <= 1) {
        entry.whole = WholeChunk{layout[k].name, size, placed.begin, placed.end, placed.crc32c};
      }
    }
  }
  if (!objects.file.empty()) {
    out.index.files.push_back({objects.file, objects.file_size});
    data_bytes += objects.file_size;
  }

  // The layout: the same for every save of this rank's chunks.
  ByteWriter layout_bytes;
  layout_bytes.varint(listed.size());
  std::vector<std::uint32_t> whole_crcs;
  for (const Listed& entry : listed) {
    const LocalChunk& chunk = *entry.chunk;
    layout_bytes.fixed<std::uint64_t>(name_hash(chunk.name));
    layout_bytes.fixed<std::uint8_t>(entry.named ? 1 : 0);
    layout_bytes.fixed<std::uint8_t>(static_cast<std::uint8_t>(chunk.dtype));
    layout_bytes.varint(chunk.shape.size());
    for (std::int64_t s : chunk.shape) layout_bytes.varint(static_cast<std::uint64_t>(s));
    if (entry.named) layout_bytes.text(chunk.name);
    layout_bytes.varint(entry.runs.size());
    for (const ChunkRun& run : entry.runs) write_run(layout_bytes, run);
    layout_bytes.fixed<std::uint8_t>(entry.whole ? 1 : 0);
    if (entry.whole) {
      write_whole(layout_bytes, *entry.whole);
      whole_crcs.push_back(entry.whole->crc32c.empty() ? 0 : entry.whole->crc32c[0]);
    }
  }
  // What changes from save to save: sizes, objects, the whole tensors' checksums.
  ByteWriter variable;
  variable.varint(data_bytes);
  variable.varint(objects.objects.size());
  for (const auto& [name, object] : objects.objects) {
    variable.text(name);
    variable.text(object.file);
    variable.varint(object.begin);
    variable.varint(object.end);
    variable.varint(object.crc32c.size());
    for (std::uint32_t crc : object.crc32c) variable.fixed<std::uint32_t>(crc);
  }
  variable.varint(objects.file.empty() ? 0 : 1);
  if (!objects.file.empty()) {
    variable.text(objects.file);
    variable.varint(objects.file_size);
  }
  variable.varint(whole_crcs.size());
  for (std::uint32_t crc : whole_crcs) variable.fixed<std::uint32_t>(crc);

  ByteWriter plan;
  plan.raw(kPlanMagic);
  plan.varint(static_cast<std::uint32_t>(rank));
  out.layout_digest = layout_digest_of(layout_bytes.bytes());
  plan.fixed<std::uint64_t>(out.layout_digest);
  plan.varint(layout_bytes.size());
  plan.raw(layout_bytes.bytes());
  plan.raw(variable.bytes());
  out.plan = std::move(plan.bytes());
  return out;
}

std::string cached_plan(const std::string& plan) {
  const PlanParts parts = plan_parts(plan);
  ByteWriter out;
  out.raw(kCachedMagic);
  out.varint(static_cast<std::uint32_t>(parts.rank));
  out.fixed<std::uint64_t>(parts.digest);
  out.raw(parts.variable);
  return std::move(out.bytes());
}

namespace {

// One thread's share of the merge: the plans of a range of ranks, merged on their own
// (combine then joins the shares in rank order).
struct MergeShare {
  SlotTable table{0};  // indexes `slots`
  std::vector<Slot> slots;
  std::vector<HotSlot> hot;  // by the same index
  std::vector<std::pair<int, Variable>> variables;  // per plan, in order, without the checksums
  std::vector<std::pair<int, std::uint64_t>> digests;
  std::vector<std::pair<int, std::vector<std::uint32_t>>> wholes;  // per plan: its whole tensors' slots
};

// Merges plans[first, last) into `share`. @returns the first plan's error.
Result<void> merge_share(std::span<const std::string> plans, std::size_t first, std::size_t last, int world_size,
                         MergeShare& share) {
  // Sized from the first plan, so the table seldom grows: about as many tensors as it lists.
  share.table = SlotTable(first < last ? plans[first].size() / 16 : 0);
  SlotTable& table = share.table;
  std::vector<Slot>& slots = share.slots;
  std::vector<HotSlot>& hot = share.hot;
  std::vector<std::int64_t> shape;  // reused: decoding allocates only for new tensors
  ChunkRun run;
  for (std::size_t p = first; p < last; ++p) {
    if (!plans[p].empty() && plans[p][0] == '!') {
      return fail(Errc::io, "rank " + std::to_string(p) + " could not write its data: " + plans[p].substr(1),
                  {.operation = "save"});
    }
    const PlanParts parts = plan_parts(plans[p]);
    if (!parts.valid || parts.cached || parts.rank < 0 || parts.rank >= world_size) {
      return fail(plan_error(static_cast<int>(p), parts.cached ? "a cached plan where all were needed" : "not a plan"));
    }
    const int rank = parts.rank;
    share.digests.emplace_back(rank, parts.digest);
    auto variable = read_variable(parts.variable);
    if (!variable) return fail(plan_error(rank, "its sizes, objects or checksums do not parse"));
    auto& wholes_here = share.wholes.emplace_back(rank, std::vector<std::uint32_t>{}).second;
    std::size_t wholes = 0;  // of this rank's, so far
    std::uint32_t previous = ~0u;  // the slot of this plan's previous record
    ByteReader in(parts.layout);
    const std::uint64_t tensors = in.varint();
    for (std::uint64_t t = 0; t < tensors && !in.failed; ++t) {
      const std::uint64_t hash = in.fixed<std::uint64_t>();
      const bool named = in.fixed<std::uint8_t>() != 0;
      const auto dtype = static_cast<DType>(in.fixed<std::uint8_t>());
      const std::uint64_t ndim = in.varint();
      if (ndim > in.left()) return fail(plan_error(rank, "a shape leaves it"));
      shape.resize(ndim);
      std::uint64_t digest = mix(static_cast<std::uint64_t>(dtype), ndim);
      for (auto& s : shape) digest = mix(digest, static_cast<std::uint64_t>(s = static_cast<std::int64_t>(in.varint())));
      // Ranks list their tensors in much the same order (a rank's experts as the last
      // rank of its expert coordinate did), so the slot that followed the previous
      // record's last time is tried before the table: one cache line, not two misses.
      bool added = false;
      std::uint32_t index = previous < hot.size() ? hot[previous].next : ~0u;
      if (index >= hot.size() || hot[index].hash != hash) index = table.find_or_add(hash, added);
      if (added) {
        slots.push_back(Slot{.hash = hash, .dtype = dtype, .shape = shape, .first_rank = rank});
        hot.push_back(HotSlot{.hash = hash, .shape_digest = digest});
      }
      if (previous < hot.size()) hot[previous].next = index;
      previous = index;
      HotSlot& fast = hot[index];
      const bool same_shape = fast.shape_digest == digest;
      if (!same_shape && slots[index].conflict_rank < 0) slots[index].conflict_rank = rank;
      if (named) {
        Slot& slot = slots[index];
        const std::string_view name = in.text();
        if (!slot.named) {
          slot.name = std::string(name);
          slot.named = true;
        } else if (slot.name != name && slot.other_name.empty()) {
          slot.other_name = std::string(name);
        }
      }
      const std::uint64_t runs = in.varint();
      if (runs > in.left()) return fail(plan_error(rank, "its runs leave it"));
      for (std::uint64_t k = 0; k < runs; ++k) {
        read_run(in, ndim, run);
        if (run.count < 1) return fail(plan_error(rank, "a run without chunks"));
        const std::uint64_t rest = rest_digest(run);
        if (fast.open.count > 0 && same_shape && fast.open.dim == run.dim && fast.rest_digest == rest &&
            continue_run(fast.open, run, fast.extent)) {
          continue;
        }
        // Runs of another shape than the slot's are kept apart: the shape is refused below.
        Slot& slot = slots[index];
        if (fast.open.count > 0) slot.runs.push_back(std::move(fast.open));
        fast.open = run;
        fast.rest_digest = rest;
        fast.extent = run.dim < slot.shape.size() ? slot.shape[run.dim] : 0;
      }
      if (in.fixed<std::uint8_t>() != 0) {
        if (wholes >= variable->whole_crcs.size()) return fail(plan_error(rank, "a whole chunk without its checksum"));
        slots[index].whole = read_whole(in);
        slots[index].whole->crc32c = {variable->whole_crcs[wholes++]};
        wholes_here.push_back(index);
      }
    }
    if (in.failed || !in.done() || wholes != variable->whole_crcs.size()) {
      return fail(plan_error(rank, "it ends early or runs on"));
    }
    variable->whole_crcs = {};
    share.variables.emplace_back(rank, std::move(*variable));
  }
  for (std::size_t index = 0; index < slots.size(); ++index) {  // every run closed, for combine
    if (hot[index].open.count > 0) slots[index].runs.push_back(std::move(hot[index].open));
    hot[index].open.count = 0;
  }
  return {};
}

// `from`'s tensors added to `into`'s (whose ranks all come before `from`'s), each slot's
// runs after `into`'s, the seam joined where a run continues across it: the same runs
// as one thread merging both. `moved` receives, per slot of `from`, its slot in `into`.
void combine(MergeShare& into, MergeShare& from, std::vector<std::uint32_t>& moved) {
  SlotTable& table = into.table;
  moved.resize(from.slots.size());
  for (std::size_t i = 0; i < from.slots.size(); ++i) {
    Slot& theirs = from.slots[i];
    bool added = false;
    const std::uint32_t index = table.find_or_add(theirs.hash, added);
    moved[i] = index;
    if (added) {
      into.slots.push_back(std::move(theirs));
      into.hot.push_back(std::move(from.hot[i]));
      continue;
    }
    Slot& ours = into.slots[index];
    if (ours.conflict_rank < 0) {
      ours.conflict_rank = into.hot[index].shape_digest != from.hot[i].shape_digest ? theirs.first_rank
                                                                                    : theirs.conflict_rank;
    }
    if (theirs.named && !ours.named) {
      ours.name = std::move(theirs.name);
      ours.named = true;
    } else if (theirs.named && ours.other_name.empty() && ours.name != theirs.name) {
      ours.other_name = std::move(theirs.name);
    }
    if (ours.other_name.empty() && !theirs.other_name.empty()) ours.other_name = std::move(theirs.other_name);
    if (theirs.whole) ours.whole = std::move(theirs.whole);
    for (ChunkRun& run : theirs.runs) {
      if (ours.runs.empty() || !extend_run(ours.runs.back(), run, ours.shape)) ours.runs.push_back(std::move(run));
    }
  }
  for (auto& [rank, slots] : from.wholes) {
    for (std::uint32_t& slot : slots) slot = moved[slot];
    into.wholes.emplace_back(rank, std::move(slots));
  }
  std::ranges::move(from.variables, std::back_inserter(into.variables));
  std::ranges::move(from.digests, std::back_inserter(into.digests));
}

}  // namespace

Result<MergedPlan> merge_plans(std::span<const std::string> plans, int world_size, unsigned threads) {
  MergedPlan merged;
  merged.digests.assign(static_cast<std::size_t>(std::max(world_size, 0)), 0);
  merged.whole_of_rank.resize(merged.digests.size());
  // Contiguous ranges of ranks, so that each share's runs come out as one thread's would.
  const std::size_t shares = std::clamp<std::size_t>(threads, 1, std::max<std::size_t>(plans.size(), 1));
  std::vector<MergeShare> share(shares);
  std::vector<Result<void>> outcome(shares);
  auto bounds = [&](std::size_t k) { return plans.size() * k / shares; };
  run_parts(shares, [&](std::size_t k) { outcome[k] = merge_share(plans, bounds(k), bounds(k + 1), world_size, share[k]); });
  for (const auto& done : outcome) {  // the first failing rank's error, as one thread would report it
    if (!done) return fail(done.error());
  }
  std::vector<std::uint32_t> moved;
  for (std::size_t k = 1; k < shares; ++k) combine(share[0], share[k], moved);
  MergeShare& all = share[0];
  std::vector<Slot>& slots = all.slots;
  for (auto& [rank, variable] : all.variables) {
    if (auto ok = add_variable(variable, rank, merged.data_bytes, merged.objects, merged.object_files); !ok) {
      return fail(ok.error());
    }
  }
  for (const auto& [rank, digest] : all.digests) merged.digests[static_cast<std::size_t>(rank)] = digest;
  for (auto& [rank, wholes] : all.wholes) {
    auto& mine = merged.whole_of_rank[static_cast<std::size_t>(rank)];
    mine.insert(mine.end(), wholes.begin(), wholes.end());
  }

  merged.tensors.reserve(slots.size());
  for (std::size_t index = 0; index < slots.size(); ++index) {
    Slot& slot = slots[index];
    auto label = [&slot] {
      return slot.named ? slot.name
                        : "a tensor of shape " + shape_text(slot.shape) + " (name hash " + hash_text(slot.hash) + ")";
    };
    if (!slot.other_name.empty()) {
      return fail(Errc::invalid_argument,
                  "tensors " + slot.name + " and " + slot.other_name +
                      " have the same 64-bit name hash, which the checkpoint's index cannot tell apart: rename one",
                  {.fqn = slot.name, .operation = "save"});
    }
    if (slot.conflict_rank >= 0) {
      return fail(Errc::invalid_argument,
                  "rank " + std::to_string(slot.conflict_rank) + " holds " + label() + " with another dtype or shape than rank " +
                      std::to_string(slot.first_rank),
                  {.fqn = slot.name, .operation = "save"});
    }
    if (!detail::checked_bytes(slot.shape, slot.dtype)) {
      return fail(Errc::invalid_argument, label() + " has a shape too large to save", {.fqn = slot.name, .operation = "save"});
    }
    if (!slot.named) {
      return fail(Errc::corrupt,
                  "no rank wrote the first element of " + label() + ", listed by rank " + std::to_string(slot.first_rank) +
                      ": its chunks do not tile it",
                  {.operation = "save"});
    }
    if (slot.runs.size() > 1) compact(slot.runs, slot.shape);
    for (const ChunkRun& r : slot.runs) {
      if (auto problem = run_problem(r, slot.shape, world_size); !problem.empty()) {
        return fail(Errc::internal, "a chunk of " + slot.name + " " + problem, {.fqn = slot.name, .operation = "save"});
      }
    }
    TensorEntry& tensor = merged.tensors.emplace_back(
        TensorEntry{std::move(slot.name), slot.dtype, std::move(slot.shape), std::move(slot.runs), std::move(slot.whole)});
    // A whole chunk is then the tensor's only one.
    if (auto ok = check_tiling(tensor); !ok) return fail(ok.error());
    if (merged.objects.contains(tensor.name)) {
      return fail(Errc::invalid_argument, tensor.name + " is saved both as a tensor and as an object",
                  {.fqn = tensor.name, .operation = "save"});
    }
  }
  return merged;
}

Result<CommitPlan> plan_commit(std::span<const std::string> plans, int world_size, std::string_view param_groups_json,
                               const PlanCache* cache) {
  CommitPlan out;
  const bool any_cached = std::ranges::any_of(plans, [](const std::string& plan) { return plan_parts(plan).cached; });
  if (!any_cached) {
    // Threads pay off from hundreds of ranks (a thread per 256 plans: tests' saves of a
    // few ranks merge on the caller's).
    auto merged = merge_plans(plans, world_size, static_cast<unsigned>(parts_for(plans.size(), 256)));
    if (!merged) return fail(merged.error());
    std::vector<std::int64_t> ordinals;
    out.index = encode_tensor_index(merged->tensors, param_groups_json, &ordinals);
    out.objects = std::move(merged->objects);
    out.object_files = std::move(merged->object_files);
    out.data_bytes = merged->data_bytes;
    out.digests = std::move(merged->digests);
    for (const auto& slots : merged->whole_of_rank) {
      auto& mine = out.crc_slots.emplace_back();
      for (std::uint32_t slot : slots) mine.push_back(static_cast<std::uint32_t>(ordinals[slot]));
    }
    return out;
  }
  // Every rank's layout as at the last commit: that index, with this save's checksums.
  auto stale = [](const std::string& why) {
    return fail(Errc::internal, "a plan cached from the last save cannot be used: " + why +
                                    " (the checkpointers forget their plans: the next save sends them whole)",
                {.operation = "save"});
  };
  if (!cache || cache->digests.size() != static_cast<std::size_t>(world_size) || plans.size() != cache->digests.size()) {
    return stale("rank 0 has no plans of this world from an earlier save");
  }
  out.index = cache->index;
  out.digests = cache->digests;
  out.crc_slots = cache->crc_slots;
  out.reused = true;
  out.index.resize(tensor_index_groups_at(out.index));  // this save's param groups
  out.index.append(param_groups_json);
  const std::size_t crcs_at = tensor_index_crcs_at(out.index);
  for (std::size_t p = 0; p < plans.size(); ++p) {
    if (!plans[p].empty() && plans[p][0] == '!') {
      return fail(Errc::io, "rank " + std::to_string(p) + " could not write its data: " + plans[p].substr(1),
                  {.operation = "save"});
    }
    const PlanParts parts = plan_parts(plans[p]);
    if (!parts.valid || parts.rank != static_cast<int>(p)) return fail(plan_error(static_cast<int>(p), "not a plan"));
    if (parts.digest != cache->digests[p]) return stale("rank " + std::to_string(p) + "'s layout changed");
    auto variable = read_variable(parts.variable);
    const auto& slots = cache->crc_slots[p];
    if (!variable || variable->whole_crcs.size() != slots.size()) {
      return fail(plan_error(parts.rank, "its sizes, objects or checksums do not parse"));
    }
    for (std::size_t k = 0; k < slots.size(); ++k) {
      std::memcpy(out.index.data() + crcs_at + slots[k] * sizeof(std::uint32_t), &variable->whole_crcs[k],
                  sizeof(std::uint32_t));
    }
    if (auto ok = add_variable(*variable, parts.rank, out.data_bytes, out.objects, out.object_files); !ok) {
      return fail(ok.error());
    }
  }
  return out;
}

void remember(PlanCache& cache, const CommitPlan& committed) {
  if (committed.reused) return;  // the cache holds that layout already
  cache.digests = committed.digests;
  cache.index = committed.index;
  cache.crc_slots = committed.crc_slots;
}

}  // namespace corockpt::detail
