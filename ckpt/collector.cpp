#include "ckpt/collector.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>

#include "ckpt/detail/shard_rows.hpp"
#include "runtime/when_all.hpp"

namespace corockpt {

namespace {

using detail::bytes_of;

// Adam's `step` for `fqn`: a 0-d float32 tensor owned by `out`.
void add_step(StateDict& out, const std::string& fqn, double step) {
  Tensor& t = out.own(DType::float32, {});
  t.values<float>()[0] = static_cast<float>(step);
  out.optim.state[fqn]["step"] = t.view();
}
using detail::row_elements;
using detail::rows_of;

/// Full values an expert's group leader sends to rank 0 (experts_to_rank0): per param
/// in registration order, its value and states.
using Export = std::vector<TensorView>;

/// Whether this rank sends `inst`'s full values to rank 0 for experts_to_rank0: it leads
/// the expert's group and rank 0 does not hold that expert.
bool exports_to_rank0(const Model& model, const UnitInstance& inst, const StateDictOptions& options) {
  if (!options.experts_to_rank0 || inst.expert < 0 || inst.group_rank != 0 || model.rank() == 0) return false;
  auto mesh = unit_mesh(model.spec(), *inst.unit);
  auto held = mesh ? experts_held(*inst.unit, *mesh, 0) : Result<std::vector<int>>(fail(mesh.error()));
  return held && std::find(held->begin(), held->end(), inst.expert) == held->end();
}

/// What one unit instance contributes, per param: its value and its states ("kinds").
struct UnitCollector {
  Model& model;
  UnitInstance& inst;
  const StateDictOptions& options;
  StateDict& out;
  const std::vector<std::string>& state_names;
  Export* export_to_rank0;  // null unless this rank sends this instance to rank 0
  int tag;                  // this instance's point-to-point tag: its registration index

  bool keeps_values() const { return !(options.full_state_dict && options.cpu_offload && model.rank() != 0); }
  bool materializes() const { return keeps_values() || export_to_rank0 != nullptr; }

  // Adds the value (kind 0) or state (kind >= 1) of `slot`, given as `local` shard or full tensor.
  void add(const ParamSlot& slot, int kind, TensorView view) {
    if (export_to_rank0) export_to_rank0->push_back(view);
    if (!keeps_values()) return;
    StateValue value = view;
    if (!options.full_state_dict) {
      value = DTensor{view, slot.spec->shape, inst.placement.mesh, inst.placement.placements, slot.box};
    }
    if (kind == 0) {
      out.model[slot.fqn] = std::move(value);
    } else {
      out.optim.state[slot.fqn][state_names[kind - 1]] = std::move(value);
    }
  }

  bool wanted(const ParamSlot& slot) const {
    return !(options.ignore_frozen_params && slot.spec->frozen);
  }

  int kinds_of(const ParamSlot& slot) const { return 1 + static_cast<int>(slot.states.size()); }

  void add_buffers() {
    for (auto& slot : inst.params) {
      if (slot.spec->buffer) out.model[slot.fqn] = slot.value;
    }
  }

  void add_steps() {
    if (!model.has_optimizer() || model.spec().optimizer->type != OptimizerType::adam) return;
    for (auto& slot : inst.params) {
      if (slot.spec->has_optimizer_state()) add_step(out, slot.fqn, slot.step);
    }
  }

  // Sharded per_param: views of the model's own memory, no communication.
  void sharded_per_param() {
    for (auto& slot : inst.params) {
      if (slot.spec->buffer || !wanted(slot)) continue;
      add(slot, 0, slot.value);
      for (std::size_t j = 0; j < slot.states.size(); ++j) add(slot, static_cast<int>(j) + 1, slot.states[j]);
    }
  }

  // Full flat: one all-gather of [value slice, state slices...] from every group rank,
  // then each param's whole value is cut out of the concatenation.
  Task<void> flat() {
    const int kinds = 1 + static_cast<int>(inst.flat_states.size());
    const std::size_t slice_bytes = bytes_of(inst.flat_slice, inst.flat_dtype);
    std::vector<std::byte> send(slice_bytes * kinds);
    std::memcpy(send.data(), inst.flat_value.data, slice_bytes);
    for (int j = 1; j < kinds; ++j) std::memcpy(send.data() + j * slice_bytes, inst.flat_states[j - 1].data, slice_bytes);
    std::vector<std::byte> recv(send.size() * inst.group_size());
    if (auto ok = co_await inst.group->all_gather(send, recv); !ok) co_return fail(ok.error());

    const std::size_t esize = size_of(inst.flat_dtype);
    // Copies elements [from, to) of kind `kind`'s concatenation into dst.
    auto copy_range = [&](int kind, std::int64_t from, std::int64_t to, std::byte* dst) {
      while (from < to) {
        std::int64_t owner = from / inst.flat_slice;
        std::int64_t offset = from % inst.flat_slice;
        std::int64_t run = std::min(to - from, inst.flat_slice - offset);
        const std::byte* src = recv.data() + (owner * kinds + kind) * slice_bytes + offset * esize;
        std::memcpy(dst, src, bytes_of(run, inst.flat_dtype));
        dst += bytes_of(run, inst.flat_dtype);
        from += run;
      }
    };
    if (!materializes()) co_return Result<void>{};
    for (auto& slot : inst.params) {
      if (slot.spec->buffer || !wanted(slot)) continue;
      const auto& shape = slot.spec->shape;
      std::int64_t first = slot.flat_offset;
      std::int64_t count = corockpt::numel(shape);
      std::vector<std::int64_t> out_shape = shape;
      if (!options.full_state_dict) {
        first += slot.box.offsets.empty() ? 0 : slot.box.offsets[0] * row_elements(shape);
        count = slot.box.numel();
        out_shape = slot.box.sizes;
      }
      for (int kind = 0; kind < kinds_of(slot); ++kind) {
        Tensor& t = out.own(slot.spec->dtype, out_shape);
        copy_range(kind, first, first + count, t.data());
        add(slot, kind, t.view());
      }
    }
    co_return Result<void>{};
  }

  // The concatenation range [begin, end) of `slot`'s Shard(0) rows on group rank `r`.
  std::pair<std::int64_t, std::int64_t> rows_range(const ParamSlot& slot, int r) const {
    const auto& shape = slot.spec->shape;
    Range rows = rows_of(shape, inst.group_size(), r);
    std::int64_t begin = slot.flat_offset + rows.offset * row_elements(shape);
    return {begin, begin + rows.length * row_elements(shape)};
  }

  // The part of `range` inside group rank `s`'s slice of the concatenation.
  std::pair<std::int64_t, std::int64_t> in_slice(std::pair<std::int64_t, std::int64_t> range, int s) const {
    return {std::max(range.first, s * inst.flat_slice), std::min(range.second, (s + 1) * inst.flat_slice)};
  }

  // Sharded flat: every rank needs its Shard(0) rows of every param, which lie in the
  // slices of one or a few ranks. Each pair of ranks exchanges exactly the elements one
  // holds and the other needs (values and states in one message, tagged with the unit
  // instance), so a rank receives about 1/N of what a full gather would bring.
  Task<void> flat_redistribute() {
    const int n = inst.group_size(), me = inst.group_rank;
    const int kinds = 1 + static_cast<int>(inst.flat_states.size());
    const std::size_t esize = size_of(inst.flat_dtype);
    std::vector<const ParamSlot*> params;
    for (const auto& slot : inst.params) {
      if (!slot.spec->buffer) params.push_back(&slot);
    }
    auto flat_of = [&](int kind) { return kind == 0 ? inst.flat_value : inst.flat_states[kind - 1]; };
    // Elements of group rank `holder`'s slice that group rank `needer` needs, per param.
    auto message_elements = [&](int holder, int needer) {
      std::int64_t count = 0;
      for (const auto* slot : params) {
        auto [lo, hi] = in_slice(rows_range(*slot, needer), holder);
        count += std::max<std::int64_t>(0, hi - lo);
      }
      return count * kinds;
    };

    // My rows, one tensor per param and kind, filled from my slice and the messages.
    std::vector<std::vector<Tensor*>> rows(params.size());
    for (std::size_t i = 0; i < params.size(); ++i) {
      for (int kind = 0; kind < kinds; ++kind) rows[i].push_back(&out.own(params[i]->spec->dtype, params[i]->box.sizes));
    }
    // Copies a message's pieces (or my own slice's) into my rows; `from_slice` reads the
    // holder's slice directly instead of a message.
    auto unpack = [&](int holder, const std::byte* message, bool from_slice) {
      std::size_t at = 0;
      for (int kind = 0; kind < kinds; ++kind) {
        for (std::size_t i = 0; i < params.size(); ++i) {
          auto need = rows_range(*params[i], me);
          auto [lo, hi] = in_slice(need, holder);
          if (hi <= lo) continue;
          const std::byte* src = from_slice ? flat_of(kind).data + (lo - holder * inst.flat_slice) * esize : message + at;
          std::memcpy(rows[i][kind]->data() + (lo - need.first) * esize, src, (hi - lo) * esize);
          if (!from_slice) at += (hi - lo) * esize;
        }
      }
    };
    auto pack = [&](int needer) {
      std::vector<std::byte> message(message_elements(me, needer) * esize);
      std::size_t at = 0;
      for (int kind = 0; kind < kinds; ++kind) {
        for (const auto* slot : params) {
          auto [lo, hi] = in_slice(rows_range(*slot, needer), me);
          if (hi <= lo) continue;
          std::memcpy(message.data() + at, flat_of(kind).data + (lo - me * inst.flat_slice) * esize, (hi - lo) * esize);
          at += (hi - lo) * esize;
        }
      }
      return message;
    };

    // All sends and receives at once (a send may wait for its receive to be posted).
    std::vector<std::vector<std::byte>> outgoing(n), incoming(n);
    std::vector<Task<void>> transfers;
    for (int peer = 0; peer < n; ++peer) {
      if (peer == me) continue;
      outgoing[peer] = pack(peer);
      incoming[peer].resize(message_elements(peer, me) * esize);
      if (!outgoing[peer].empty()) transfers.push_back(inst.group->send(outgoing[peer], peer, tag));
      if (!incoming[peer].empty()) transfers.push_back(inst.group->recv(incoming[peer], peer, tag));
    }
    if (auto ok = all_ok(co_await when_all(std::move(transfers))); !ok) co_return ok;
    unpack(me, nullptr, true);
    for (int peer = 0; peer < n; ++peer) {
      if (peer != me) unpack(peer, incoming[peer].data(), false);
    }
    for (std::size_t i = 0; i < params.size(); ++i) {
      const ParamSlot& slot = *params[i];
      if (!wanted(slot)) continue;
      for (int kind = 0; kind < kinds_of(slot); ++kind) add(slot, kind, rows[i][kind]->view());
    }
    co_return Result<void>{};
  }

  // Full per_param: one all-gather-v of every param's and state's rows from every group
  // rank; a param's full value is its ranks' rows back to back (Shard(0)).
  Task<void> full_per_param() {
    const int n = inst.group_size();
    std::vector<std::size_t> counts =
        detail::row_bytes_per_rank(inst.params, n, [this](const ParamSlot& slot) { return kinds_of(slot); });
    std::vector<std::byte> send;
    send.reserve(counts[inst.group_rank]);
    for (auto& slot : inst.params) {
      if (slot.spec->buffer) continue;
      auto append = [&send](const TensorView& v) { send.insert(send.end(), v.data, v.data + v.nbytes()); };
      append(slot.value);
      for (auto& state : slot.states) append(state);
    }
    std::size_t total = 0;
    std::vector<std::size_t> displacement(n);
    for (int r = 0; r < n; ++r) {
      displacement[r] = total;
      total += counts[r];
    }
    std::vector<std::byte> recv(total);
    if (auto ok = co_await inst.group->all_gather_v(send, recv, counts); !ok) co_return fail(ok.error());
    if (!materializes()) co_return Result<void>{};

    std::vector<std::size_t> cursor = displacement;  // where each rank's next piece starts
    for (auto& slot : inst.params) {
      if (slot.spec->buffer) continue;
      const int kinds = kinds_of(slot);
      std::vector<Tensor*> full(kinds, nullptr);
      if (wanted(slot)) {
        for (int kind = 0; kind < kinds; ++kind) full[kind] = &out.own(slot.spec->dtype, slot.spec->shape);
      }
      const std::int64_t row = row_elements(slot.spec->shape);
      for (int r = 0; r < n; ++r) {
        Range rows = rows_of(slot.spec->shape, n, r);
        std::size_t piece = bytes_of(rows.length * row, slot.spec->dtype);
        for (int kind = 0; kind < kinds; ++kind) {
          if (full[kind] && piece > 0) {  // an empty tensor has no memory to copy into
            std::memcpy(full[kind]->data() + bytes_of(rows.offset * row, slot.spec->dtype), recv.data() + cursor[r], piece);
          }
          cursor[r] += piece;
        }
      }
      if (!wanted(slot)) continue;
      for (int kind = 0; kind < kinds; ++kind) add(slot, kind, full[kind]->view());
    }
    co_return Result<void>{};
  }

  Task<void> run() {
    if (keeps_values()) {
      add_buffers();
      add_steps();
    }
    // (An if, not ?: — GCC 12 destroys a conditional's awaitable temporary twice.)
    if (inst.is_flat() && options.full_state_dict) co_return co_await flat();
    if (inst.is_flat()) co_return co_await flat_redistribute();
    if (!options.full_state_dict) {
      sharded_per_param();
      co_return Result<void>{};
    }
    co_return co_await full_per_param();
  }
};

Task<void> collect_unit(Model& model, UnitInstance& inst, const StateDictOptions& options, StateDict& out,
                        const std::vector<std::string>& state_names, Export* export_to_rank0, int tag) {
  UnitCollector collector{model, inst, options, out, state_names, export_to_rank0, tag};
  std::optional<ScopedSpan> span;
  if (model.tracer()) {
    span.emplace(*model.tracer(), "unit " + inst.unit->name + (inst.expert >= 0 ? "/" + std::to_string(inst.expert) : ""),
                 "gather", model.rank());
  }
  auto done = co_await collector.run();
  if (!done) {
    Error e = done.error();
    e.message = "unit " + inst.unit->name + (inst.expert >= 0 ? " expert " + std::to_string(inst.expert) : "") +
                ": " + e.message;
    co_return fail(std::move(e.with_rank(model.rank())));
  }
  co_return done;
}

// The params of `unit` and their kinds, as an Export lays them out.
struct ExportLayout {
  const ParamSpec* param;
  std::string fqn;
  int kinds;
};

std::vector<ExportLayout> export_layout(const Model& model, const UnitSpec& unit, int expert,
                                        const StateDictOptions& options, std::size_t state_count) {
  std::vector<ExportLayout> out;
  for (const auto& p : model.spec().params) {
    if (p.unit != unit.name || p.buffer || (options.ignore_frozen_params && p.frozen)) continue;
    out.push_back({&p, fqn(unit, p, expert), 1 + (p.has_optimizer_state() ? static_cast<int>(state_count) : 0)});
  }
  return out;
}

// experts_to_rank0: after the units, each expert rank 0 lacks goes to it from its
// group's leader. Every rank walks every (unit, expert) in registration order, so the
// sends and receives on the world communicator line up; the tag is the walk's index.
Task<void> experts_to_rank0(Model& model, const StateDictOptions& options, const std::vector<std::string>& state_names,
                            std::map<const UnitInstance*, Export>& exports, StateDict& out) {
  const auto& world = model.world();
  int tag = 0;
  for (const auto& unit : model.spec().units) {
    if (!unit.has_experts()) continue;
    auto mesh = unit_mesh(model.spec(), unit);
    if (!mesh) co_return fail(mesh.error());
    auto held_by_0 = experts_held(unit, *mesh, 0);
    if (!held_by_0) co_return fail(held_by_0.error());
    for (int e = 0; e < unit.num_experts; ++e, ++tag) {
      if (std::find(held_by_0->begin(), held_by_0->end(), e) != held_by_0->end()) continue;
      // The leader: the rank holding expert e at index 0 of its shard group.
      int leader = -1;
      for (int r = 0; r < model.world_size() && leader < 0; ++r) {
        auto held = experts_held(unit, *mesh, r);
        auto group = mesh->submesh(unit.shard_dim, r);
        if (held && group && std::find(held->begin(), held->end(), e) != held->end() && group->index_of(r) == 0) {
          leader = r;
        }
      }
      if (model.rank() == leader) {
        for (auto& [inst, views] : exports) {
          if (inst->unit != &unit || inst->expert != e) continue;
          std::vector<std::byte> bytes;
          for (const auto& v : views) bytes.insert(bytes.end(), v.data, v.data + v.nbytes());
          if (auto ok = co_await world->send(bytes, 0, tag); !ok) co_return fail(ok.error());
        }
      } else if (model.rank() == 0) {
        auto layout = export_layout(model, unit, e, options, state_names.size());
        std::vector<Tensor*> tensors;
        std::size_t total = 0;
        for (const auto& item : layout) {
          for (int kind = 0; kind < item.kinds; ++kind) {
            tensors.push_back(&out.own(item.param->dtype, item.param->shape));
            total += tensors.back()->nbytes();
          }
        }
        std::vector<std::byte> bytes(total);
        if (auto ok = co_await world->recv(bytes, leader, tag); !ok) co_return fail(ok.error());
        std::size_t at = 0, t = 0;
        for (const auto& item : layout) {
          for (int kind = 0; kind < item.kinds; ++kind, ++t) {
            std::memcpy(tensors[t]->data(), bytes.data() + at, tensors[t]->nbytes());
            at += tensors[t]->nbytes();
            if (kind == 0) {
              out.model[item.fqn] = tensors[t]->view();
            } else {
              out.optim.state[item.fqn][state_names[kind - 1]] = tensors[t]->view();
            }
          }
          if (item.param->has_optimizer_state() && model.spec().optimizer->type == OptimizerType::adam) {
            add_step(out, item.fqn, model.step());  // the sender's step is not sent: params step together
          }
        }
      }
    }
  }
  co_return Result<void>{};
}

}  // namespace

Task<StateDict> get_state_dict(Model& model, StateDictOptions options) {
  if (options.experts_to_rank0 && !options.full_state_dict) {
    co_return fail(Errc::invalid_argument, "experts_to_rank0 needs full_state_dict");
  }
  if (model.memory_space() != MemorySpace::host) {
    co_return fail(Errc::unavailable,
                   "get_state_dict gathers host memory; this model lies in " +
                       std::string(to_string(model.memory_space())) + " memory (checkpoint it with AsyncCheckpointer)",
                   {.rank = model.rank(), .operation = "get_state_dict"});
  }
  model.initialize_optimizer_state();
  const std::vector<std::string> state_names =
      model.has_optimizer() ? optimizer_state_names(*model.spec().optimizer) : std::vector<std::string>{};

  StateDict out;
  // One task per unit instance, started in registration order: each issues its one
  // collective before it first waits, so every rank issues them in the same order.
  std::vector<Task<void>> units;
  std::map<const UnitInstance*, Export> exports;
  int tag = 0;  // registration index: the same instance has the same index on every rank of its group
  for (auto& inst : model.instances()) {
    Export* exported = exports_to_rank0(model, inst, options) ? &exports[&inst] : nullptr;
    units.push_back(collect_unit(model, inst, options, out, state_names, exported, tag++));
  }
  if (auto ok = all_ok(co_await when_all(std::move(units))); !ok) co_return fail(ok.error());
  if (options.experts_to_rank0) {
    if (auto ok = co_await experts_to_rank0(model, options, state_names, exports, out); !ok) co_return fail(ok.error());
  }

  if (model.has_optimizer()) {
    ParamGroup group{*model.spec().optimizer, {}};
    for (const auto& inst : model.instances()) {
      for (const auto& slot : inst.params) {
        if (slot.spec->has_optimizer_state()) group.params.push_back(slot.fqn);
      }
    }
    if (options.experts_to_rank0 && model.rank() == 0) {
      // Rank 0's group lists every expert it now holds, after its own params.
      for (const auto& [fqn, states] : out.optim.state) {
        if (std::find(group.params.begin(), group.params.end(), fqn) == group.params.end()) group.params.push_back(fqn);
      }
    }
    out.optim.param_groups.push_back(std::move(group));
  }
  co_return out;
}

}  // namespace corockpt
