#include "corockpt/ckpt/local_chunks.hpp"

#include <algorithm>
#include <cstring>

#include "corockpt/ckpt/detail/shard_rows.hpp"
#include "corockpt/ckpt/unit_placement.hpp"

namespace corockpt {

std::uint32_t fnv1a32(std::string_view text) {
  std::uint32_t hash = 2166136261u;
  for (char c : text) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 16777619u;
  }
  return hash;
}

namespace {

using detail::bytes_of;

// Whether `rank` is the writer, among `holders`, of the chunk called `name`.
bool writes(const std::vector<int>& holders, const std::string& name, int rank) {
  return holders.empty() || holders[fnv1a32(name) % holders.size()] == rank;
}

}  // namespace

Result<LocalChunks> LocalChunks::of(Model& model) {
  LocalChunks out;
  const ModelSpec& spec = model.spec();
  const std::vector<std::string> state_names =
      spec.optimizer ? optimizer_state_names(*spec.optimizer) : std::vector<std::string>{};
  const bool adam = spec.optimizer && spec.optimizer->type == OptimizerType::adam;
  const int rank = model.rank();

  // Per unit: the instances of one unit on this rank (its experts) share their holders,
  // a list as long as the unit's mesh: found once, not once per expert.
  struct UnitHolders {
    const UnitSpec* unit = nullptr;
    std::vector<int> replicas, holders;
  };
  UnitHolders known;
  for (std::uint32_t unit = 0; unit < model.instances().size(); ++unit) {
    auto& inst = model.instances()[unit];
    if (known.unit != inst.unit) {
      auto mesh = unit_mesh(spec, *inst.unit);
      if (!mesh) return fail(mesh.error());
      auto replicas = instance_holders(*inst.unit, *mesh, inst.expert, rank, false);
      if (!replicas) return fail(replicas.error());
      auto holders = instance_holders(*inst.unit, *mesh, inst.expert, rank, true);
      if (!holders) return fail(holders.error());
      known = {inst.unit, std::move(*replicas), std::move(*holders)};
    }
    const std::vector<int>* replicas = &known.replicas;
    const std::vector<int>* holders = &known.holders;

    auto add = [&](const std::string& name, const ParamSlot& slot, const Box& box, std::byte* data, DType dtype,
                   const std::vector<int>& who, MemorySpace space) {
      out.chunks_.push_back(LocalChunk{.name = name, .dtype = dtype, .shape = slot.spec->shape, .box = box,
                                       .bytes = {data, bytes_of(box.numel(), dtype)},
                                       .space = space, .writer = writes(who, name, rank), .unit = unit});
    };
    const std::int64_t slice_begin = inst.group_rank * inst.flat_slice;
    for (auto& slot : inst.params) {
      const std::vector<std::string> names = [&] {
        std::vector<std::string> n{slot.fqn};
        if (slot.spec->has_optimizer_state()) {
          for (const auto& s : state_names) n.push_back("state." + slot.fqn + "." + s);
        }
        return n;
      }();
      if (slot.spec->buffer) {
        add(slot.fqn, slot, slot.box, slot.value.data, slot.value.dtype, *holders, slot.value.space);
        out.chunks_.back().at_request = slot.spec->forward_mutates;
        continue;
      }
      if (!inst.is_flat()) {
        add(names[0], slot, slot.box, slot.value.data, slot.value.dtype, *replicas, slot.value.space);
        for (std::size_t s = 0; s < slot.states.size(); ++s) {
          add(names[s + 1], slot, slot.box, slot.states[s].data, slot.states[s].dtype, *replicas, slot.states[s].space);
        }
      } else {
        // The part of the param inside this rank's slice of the concatenation.
        const std::int64_t size = corockpt::numel(slot.spec->shape);
        const std::int64_t from = std::max(slice_begin, slot.flat_offset);
        const std::int64_t to = std::min(slice_begin + inst.flat_slice, slot.flat_offset + size);
        if (from < to) {
          std::size_t at = bytes_of(from - slice_begin, inst.flat_dtype);
          for (const Box& box : flat_range_boxes(slot.spec->shape, from - slot.flat_offset, to - slot.flat_offset)) {
            add(names[0], slot, box, inst.flat_value.data + at, inst.flat_dtype, *replicas, inst.flat_value.space);
            for (std::size_t s = 0; s < inst.flat_states.size() && slot.spec->has_optimizer_state(); ++s) {
              add(names[s + 1], slot, box, inst.flat_states[s].data + at, inst.flat_dtype, *replicas,
                  inst.flat_states[s].space);
            }
            at += bytes_of(box.numel(), inst.flat_dtype);
          }
        } else {  // listed though empty here, so a save knows every tensor of the model
          const Box none{std::vector<std::int64_t>(slot.spec->shape.size(), 0),
                         std::vector<std::int64_t>(slot.spec->shape.size(), 0)};
          for (std::size_t n = 0; n < names.size(); ++n) add(names[n], slot, none, nullptr, inst.flat_dtype, *replicas, MemorySpace::host);
        }
      }
      if (adam && slot.spec->has_optimizer_state()) {
        float& step = out.steps_.emplace_back(static_cast<float>(slot.step));
        const std::string name = "state." + slot.fqn + ".step";
        out.chunks_.push_back(LocalChunk{.name = name, .dtype = DType::float32, .shape = {}, .box = {},
                                         .bytes = std::as_writable_bytes(std::span<float>(&step, 1)),
                                         .writer = writes(*holders, name, rank), .step_of = &slot, .unit = unit});
      }
    }
  }
  return out;
}

LocalChunks LocalChunks::from(std::vector<LocalChunk> chunks) {
  LocalChunks out;
  out.chunks_ = std::move(chunks);
  return out;
}

void LocalChunks::store_steps() {
  for (const auto& chunk : chunks_) {
    if (!chunk.step_of) continue;
    float value;
    std::memcpy(&value, chunk.bytes.data(), sizeof value);
    chunk.step_of->step = value;
  }
}

void LocalChunks::load_steps() {
  for (auto& chunk : chunks_) {
    if (!chunk.step_of) continue;
    const float value = static_cast<float>(chunk.step_of->step);
    std::memcpy(chunk.bytes.data(), &value, sizeof value);
  }
}

}  // namespace corockpt
