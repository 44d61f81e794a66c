#include "corockpt/ckpt/collector.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <numeric>
#include <optional>

#include "corockpt/ckpt/detail/copy_batch.hpp"
#include "corockpt/ckpt/detail/host_mirror.hpp"
#include "corockpt/ckpt/detail/issue_order.hpp"
#include "corockpt/ckpt/detail/lazy_optimizer_state.hpp"
#include "corockpt/ckpt/detail/shard_rows.hpp"
#include "corockpt/runtime/when_all.hpp"

namespace corockpt {

namespace {

using detail::bytes_of;
using detail::CopyBatch;
using detail::IssueOrder;
using detail::Scratch;

// Adam's `step` for `fqn`: a 0-d float32 tensor owned by `out`.
void add_step(StateDict& out, const std::string& fqn, double step) {
  Tensor& t = out.own(DType::float32, {});
  t.values<float>()[0] = static_cast<float>(step);
  out.optim.state[fqn]["step"] = t.view();
}
using detail::row_elements;
using detail::rows_of;

// A tensor owned by `out` in `space`: host memory, or `device`'s.
Result<TensorView> own_tensor(StateDict& out, Device* device, MemorySpace space, DType dtype,
                              std::vector<std::int64_t> shape) {
  if (space == MemorySpace::host) return out.own(dtype, std::move(shape)).view();
  auto memory = device->allocate(bytes_of(corockpt::numel(shape), dtype));
  if (!memory) return fail(std::move(memory.error()));
  TensorView view{memory->data(), dtype, std::move(shape), space};
  out.device_storage.push_back(std::move(*memory));
  return view;
}

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
  IssueOrder& order;        // this rank's collectives, issued in registration order
  Device* device;           // the model's (null for a model in host memory)
  MemorySpace result_space;  // where the values this returns lie
  MemorySpace comm_space;    // where the gathers' buffers lie

  // A tensor owned by `out`, in the result's space.
  Result<TensorView> make_result(DType dtype, std::vector<std::int64_t> shape) {
    return own_tensor(out, device, result_space, dtype, std::move(shape));
  }
  // `view` itself when it lies in the result's space, else a copy there (cpu_offload of a
  // model in device memory), queued on `batch`.
  Result<TensorView> in_result_space(const TensorView& view, CopyBatch& batch) {
    if (view.space == result_space) return view;
    auto copy = make_result(view.dtype, view.shape);
    if (copy) batch.add(copy->data, copy->space, view.data, view.space, view.nbytes());
    return copy;
  }

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

  Result<void> add_buffers(CopyBatch& batch) {
    for (auto& slot : inst.params) {
      if (!slot.spec->buffer) continue;
      auto value = in_result_space(slot.value, batch);
      if (!value) return fail(std::move(value.error()));
      out.model[slot.fqn] = *value;
    }
    return {};
  }

  void add_steps() {
    if (!model.has_optimizer() || model.spec().optimizer->type != OptimizerType::adam) return;
    for (auto& slot : inst.params) {
      if (slot.spec->has_optimizer_state()) add_step(out, slot.fqn, slot.step);
    }
  }

  // Sharded per_param: views of the model's own memory, no communication (copies to the
  // host instead for cpu_offload of a model in device memory).
  Result<void> sharded_per_param(CopyBatch& batch) {
    for (auto& slot : inst.params) {
      if (slot.spec->buffer || !wanted(slot)) continue;
      for (int kind = 0; kind < kinds_of(slot); ++kind) {
        auto view = in_result_space(kind == 0 ? slot.value : slot.states[kind - 1], batch);
        if (!view) return fail(std::move(view.error()));
        add(slot, kind, *view);
      }
    }
    return {};
  }

  // Full flat: one all-gather of [value slice, state slices...] from every group rank,
  // then each param's whole value is cut out of the concatenation.
  Task<void> flat() {
    const int kinds = 1 + static_cast<int>(inst.flat_states.size());
    const std::size_t slice_bytes = bytes_of(inst.flat_slice, inst.flat_dtype);
    auto send = Scratch::make(device, comm_space, slice_bytes * kinds);
    if (!send) co_return fail(std::move(send.error()));
    CopyBatch batch(device);
    for (int j = 0; j < kinds; ++j) {
      const TensorView& from = j == 0 ? inst.flat_value : inst.flat_states[j - 1];
      batch.add(send->data() + j * slice_bytes, comm_space, from.data, from.space, slice_bytes);
    }
    if (auto ok = co_await batch.run(); !ok) co_return ok;
    auto recv = Scratch::make(device, comm_space, send->size() * inst.group_size());
    if (!recv) co_return fail(std::move(recv.error()));
    if (auto ok = co_await my_turn(); !ok) co_return ok;
    if (auto ok = co_await inst.group->all_gather(send->bytes(), recv->bytes()); !ok) co_return fail(ok.error());

    const std::size_t esize = size_of(inst.flat_dtype);
    // Copies elements [from, to) of kind `kind`'s concatenation into dst.
    auto copy_range = [&](int kind, std::int64_t from, std::int64_t to, std::byte* dst) {
      while (from < to) {
        std::int64_t owner = from / inst.flat_slice;
        std::int64_t offset = from % inst.flat_slice;
        std::int64_t run = std::min(to - from, inst.flat_slice - offset);
        const std::byte* src = recv->data() + (owner * kinds + kind) * slice_bytes + offset * esize;
        batch.add(dst, result_space, src, comm_space, bytes_of(run, inst.flat_dtype));
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
        auto t = make_result(slot.spec->dtype, out_shape);
        if (!t) co_return fail(std::move(t.error()));
        copy_range(kind, first, first + count, t->data);
        add(slot, kind, *t);
      }
    }
    co_return co_await batch.run();
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
  // slices of one or a few ranks. One exchange (all-to-all) among the group moves exactly
  // the elements one rank holds and another needs (values and states in one message per
  // pair, tagged with the unit instance), so a rank receives about 1/N of what a full
  // gather would bring.
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
    std::vector<std::vector<TensorView>> rows(params.size());
    for (std::size_t i = 0; i < params.size(); ++i) {
      for (int kind = 0; kind < kinds; ++kind) {
        auto t = make_result(params[i]->spec->dtype, params[i]->box.sizes);
        if (!t) co_return fail(std::move(t.error()));
        rows[i].push_back(*t);
      }
    }
    CopyBatch batch(device);
    // Queues the copies of a message's pieces (or my own slice's) into my rows;
    // `from_slice` reads the holder's slice directly instead of a message.
    auto unpack = [&](int holder, const std::byte* message, bool from_slice) {
      std::size_t at = 0;
      for (int kind = 0; kind < kinds; ++kind) {
        for (std::size_t i = 0; i < params.size(); ++i) {
          auto need = rows_range(*params[i], me);
          auto [lo, hi] = in_slice(need, holder);
          if (hi <= lo) continue;
          const TensorView& slice = flat_of(kind);
          const std::byte* src = from_slice ? slice.data + (lo - holder * inst.flat_slice) * esize : message + at;
          batch.add(rows[i][kind].data + (lo - need.first) * esize, result_space, src,
                    from_slice ? slice.space : comm_space, (hi - lo) * esize);
          if (!from_slice) at += (hi - lo) * esize;
        }
      }
    };
    // Queues the copies of my slice's pieces that `needer` needs into `message`.
    auto pack = [&](int needer, std::byte* message) {
      std::size_t at = 0;
      for (int kind = 0; kind < kinds; ++kind) {
        const TensorView& slice = flat_of(kind);
        for (const auto* slot : params) {
          auto [lo, hi] = in_slice(rows_range(*slot, needer), me);
          if (hi <= lo) continue;
          batch.add(message + at, comm_space, slice.data + (lo - me * inst.flat_slice) * esize, slice.space,
                    (hi - lo) * esize);
          at += (hi - lo) * esize;
        }
      }
    };

    // Messages back to back in peer order; my own part stays out (I read my slice).
    std::vector<std::size_t> send_counts(n, 0), recv_counts(n, 0);
    for (int peer = 0; peer < n; ++peer) {
      if (peer == me) continue;
      send_counts[peer] = message_elements(me, peer) * esize;
      recv_counts[peer] = message_elements(peer, me) * esize;
    }
    auto outgoing = Scratch::make(device, comm_space, std::accumulate(send_counts.begin(), send_counts.end(), std::size_t{0}));
    auto incoming = Scratch::make(device, comm_space, std::accumulate(recv_counts.begin(), recv_counts.end(), std::size_t{0}));
    if (!outgoing) co_return fail(std::move(outgoing.error()));
    if (!incoming) co_return fail(std::move(incoming.error()));
    std::size_t at = 0;
    for (int peer = 0; peer < n; ++peer) {
      if (peer != me) pack(peer, outgoing->data() + at);
      at += send_counts[peer];
    }
    if (auto ok = co_await batch.run(); !ok) co_return ok;
    if (auto ok = co_await my_turn(); !ok) co_return ok;
    if (auto ok = co_await inst.group->exchange(outgoing->bytes(), send_counts, incoming->bytes(), recv_counts, tag);
        !ok) {
      co_return ok;
    }
    unpack(me, nullptr, true);
    at = 0;
    for (int peer = 0; peer < n; ++peer) {
      if (peer != me) unpack(peer, incoming->data() + at, false);
      at += recv_counts[peer];
    }
    if (auto ok = co_await batch.run(); !ok) co_return ok;
    for (std::size_t i = 0; i < params.size(); ++i) {
      const ParamSlot& slot = *params[i];
      if (!wanted(slot)) continue;
      for (int kind = 0; kind < kinds_of(slot); ++kind) add(slot, kind, rows[i][kind]);
    }
    co_return Result<void>{};
  }

  // Full per_param: one all-gather-v of every param's and state's rows from every group
  // rank; a param's full value is its ranks' rows back to back (Shard(0)).
  Task<void> full_per_param() {
    const int n = inst.group_size();
    std::vector<std::size_t> counts =
        detail::row_bytes_per_rank(inst.params, n, [this](const ParamSlot& slot) { return kinds_of(slot); });
    auto send = Scratch::make(device, comm_space, counts[inst.group_rank]);
    if (!send) co_return fail(std::move(send.error()));
    CopyBatch batch(device);
    std::size_t at = 0;
    for (auto& slot : inst.params) {
      if (slot.spec->buffer) continue;
      for (int kind = 0; kind < kinds_of(slot); ++kind) {
        const TensorView& v = kind == 0 ? slot.value : slot.states[kind - 1];
        batch.add(send->data() + at, comm_space, v.data, v.space, v.nbytes());
        at += v.nbytes();
      }
    }
    if (auto ok = co_await batch.run(); !ok) co_return ok;
    std::size_t total = 0;
    std::vector<std::size_t> displacement(n);
    for (int r = 0; r < n; ++r) {
      displacement[r] = total;
      total += counts[r];
    }
    auto recv = Scratch::make(device, comm_space, total);
    if (!recv) co_return fail(std::move(recv.error()));
    if (auto ok = co_await my_turn(); !ok) co_return ok;
    if (auto ok = co_await inst.group->all_gather_v(send->bytes(), recv->bytes(), counts); !ok) co_return fail(ok.error());
    if (!materializes()) co_return Result<void>{};

    std::vector<std::size_t> cursor = displacement;  // where each rank's next piece starts
    for (auto& slot : inst.params) {
      if (slot.spec->buffer) continue;
      const int kinds = kinds_of(slot);
      std::vector<TensorView> full(kinds);
      if (wanted(slot)) {
        for (int kind = 0; kind < kinds; ++kind) {
          auto t = make_result(slot.spec->dtype, slot.spec->shape);
          if (!t) co_return fail(std::move(t.error()));
          full[kind] = *t;
        }
      }
      const std::int64_t row = row_elements(slot.spec->shape);
      for (int r = 0; r < n; ++r) {
        Range rows = rows_of(slot.spec->shape, n, r);
        std::size_t piece = bytes_of(rows.length * row, slot.spec->dtype);
        for (int kind = 0; kind < kinds; ++kind) {
          if (full[kind].data) {  // (batch.add skips empty pieces, whose memory may be null)
            batch.add(full[kind].data + bytes_of(rows.offset * row, slot.spec->dtype), result_space,
                      recv->data() + cursor[r], comm_space, piece);
          }
          cursor[r] += piece;
        }
      }
      if (!wanted(slot)) continue;
      for (int kind = 0; kind < kinds; ++kind) add(slot, kind, full[kind]);
    }
    co_return co_await batch.run();
  }

  // Waits until every unit registered before this one has issued its collective, then
  // passes the turn on: the caller issues its collective next, before it suspends.
  Task<void> my_turn() {
    if (auto ok = co_await order.turn(tag); !ok) co_return ok;
    order.pass(tag);
    co_return Result<void>{};
  }

  Task<void> run() {
    CopyBatch batch(device);
    if (keeps_values()) {
      if (auto ok = add_buffers(batch); !ok) co_return ok;
      add_steps();
    }
    if (!inst.is_flat() && !options.full_state_dict) {
      if (auto ok = sharded_per_param(batch); !ok) co_return ok;
    }
    if (auto ok = co_await batch.run(); !ok) co_return ok;
    // (An if, not ?: — GCC 12 destroys a conditional's awaitable temporary twice.)
    if (inst.is_flat() && options.full_state_dict) co_return co_await flat();
    if (inst.is_flat()) co_return co_await flat_redistribute();
    if (options.full_state_dict) co_return co_await full_per_param();
    co_return Result<void>{};
  }
};

/// Where a collection's values and buffers lie.
struct Spaces {
  Device* device;             // the model's (null for a model in host memory)
  MemorySpace result;         // the model's, or host with cpu_offload
  MemorySpace model;          // the model's
  /// Gathers over `comm` use device buffers when both it and the model work in device
  /// memory (nccl), host buffers otherwise.
  MemorySpace comm(const Communicator& comm) const {
    return model != MemorySpace::host && comm.memory_space() == model ? model : MemorySpace::host;
  }
};

Task<void> collect_unit(Model& model, UnitInstance& inst, const StateDictOptions& options, StateDict& out,
                        const std::vector<std::string>& state_names, Export* export_to_rank0, int tag,
                        IssueOrder& order, Spaces spaces) {
  UnitCollector collector{model,         inst, options, out, state_names, export_to_rank0, tag, order, spaces.device,
                          spaces.result, spaces.comm(*inst.group)};
  std::optional<ScopedSpan> span;
  if (model.tracer()) {
    span.emplace(*model.tracer(), "unit " + inst.unit->name + (inst.expert >= 0 ? "/" + std::to_string(inst.expert) : ""),
                 "gather", model.rank());
  }
  auto done = co_await collector.run();
  order.pass(tag);  // it issued its collective, or has none, or failed: the next may go
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
                            std::map<const UnitInstance*, Export>& exports, StateDict& out, Spaces spaces) {
  const auto& world = model.world();
  const MemorySpace comm_space = spaces.comm(*world);
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
          std::size_t total = 0;
          for (const auto& v : views) total += v.nbytes();
          auto bytes = Scratch::make(spaces.device, comm_space, total);
          if (!bytes) co_return fail(std::move(bytes.error()));
          CopyBatch batch(spaces.device);
          std::size_t at = 0;
          for (const auto& v : views) {
            batch.add(bytes->data() + at, comm_space, v.data, v.space, v.nbytes());
            at += v.nbytes();
          }
          if (auto ok = co_await batch.run(); !ok) co_return ok;
          if (auto ok = co_await world->send(bytes->bytes(), 0, tag); !ok) co_return fail(ok.error());
        }
      } else if (model.rank() == 0) {
        auto layout = export_layout(model, unit, e, options, state_names.size());
        std::vector<TensorView> tensors;
        std::size_t total = 0;
        for (const auto& item : layout) {
          for (int kind = 0; kind < item.kinds; ++kind) {
            auto t = own_tensor(out, spaces.device, spaces.result, item.param->dtype, item.param->shape);
            if (!t) co_return fail(std::move(t.error()));
            tensors.push_back(*t);
            total += t->nbytes();
          }
        }
        auto bytes = Scratch::make(spaces.device, comm_space, total);
        if (!bytes) co_return fail(std::move(bytes.error()));
        if (auto ok = co_await world->recv(bytes->bytes(), leader, tag); !ok) co_return fail(ok.error());
        CopyBatch batch(spaces.device);
        std::size_t at = 0, t = 0;
        for (const auto& item : layout) {
          for (int kind = 0; kind < item.kinds; ++kind, ++t) {
            batch.add(tensors[t].data, tensors[t].space, bytes->data() + at, comm_space, tensors[t].nbytes());
            at += tensors[t].nbytes();
            if (kind == 0) {
              out.model[item.fqn] = tensors[t];
            } else {
              out.optim.state[item.fqn][state_names[kind - 1]] = tensors[t];
            }
          }
          if (item.param->has_optimizer_state() && model.spec().optimizer->type == OptimizerType::adam) {
            add_step(out, item.fqn, model.step());  // the sender's step is not sent: params step together
          }
        }
        if (auto ok = co_await batch.run(); !ok) co_return ok;
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
  const Spaces spaces{.device = model.device().get(),
                      .result = options.cpu_offload ? MemorySpace::host : model.memory_space(),
                      .model = model.memory_space()};
  if (spaces.model != MemorySpace::host) {
    if (!spaces.device || spaces.device->space() != spaces.model) {
      co_return fail(Errc::invalid_argument,
                     "the model lies in " + std::string(to_string(spaces.model)) +
                         " memory and has no device of that memory to copy with (Model::set_device)",
                     {.rank = model.rank(), .operation = "get_state_dict"});
    }
    // PyTorch's lazy optimizer-state initialisation is host code: run it on a host mirror.
    if (model.has_optimizer() && model.step() == 0) {
      auto mirror = co_await detail::HostMirror::make(model);
      if (!mirror) co_return fail(std::move(mirror.error()));
      detail::initialize_optimizer_state(model);
      if (auto ok = co_await (*mirror)->write_back(); !ok) co_return fail(std::move(ok.error()));
    }
  }
  detail::initialize_optimizer_state(model);
  const std::vector<std::string> state_names =
      model.has_optimizer() ? optimizer_state_names(*model.spec().optimizer) : std::vector<std::string>{};

  StateDict out;
  // One task per unit instance, all started at once (their copies overlap); each issues
  // its one collective in its turn (IssueOrder), so every rank issues them in
  // registration order, whatever order the copies complete in.
  std::vector<Task<void>> units;
  IssueOrder order(model.instances().size());
  std::map<const UnitInstance*, Export> exports;
  int tag = 0;  // registration index: the same instance has the same index on every rank of its group
  for (auto& inst : model.instances()) {
    Export* exported = exports_to_rank0(model, inst, options) ? &exports[&inst] : nullptr;
    units.push_back(collect_unit(model, inst, options, out, state_names, exported, tag, order, spaces));
    ++tag;
  }
  if (auto ok = all_ok(co_await when_all(std::move(units))); !ok) co_return fail(ok.error());
  if (options.experts_to_rank0) {
    if (auto ok = co_await experts_to_rank0(model, options, state_names, exports, out, spaces); !ok) {
      co_return fail(ok.error());
    }
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

Task<StateDict> state_dict_to_host(const StateDict& state, Device* device) {
  StateDict out;
  out.optim.param_groups = state.optim.param_groups;
  CopyBatch batch(device);
  auto copy = [&](const StateValue& value) -> StateValue {
    const TensorView& from = local_view(value);
    TensorView to = out.own(from.dtype, from.shape).view();
    batch.add(to.data, to.space, from.data, from.space, from.nbytes());
    if (!is_dtensor(value)) return to;
    DTensor shard = std::get<DTensor>(value);
    shard.local = to;
    return shard;
  };
  for (const auto& [fqn, value] : state.model) out.model[fqn] = copy(value);
  for (const auto& [fqn, states] : state.optim.state) {
    for (const auto& [name, value] : states) out.optim.state[fqn][name] = copy(value);
  }
  if (auto ok = co_await batch.run(); !ok) co_return fail(std::move(ok.error()));
  co_return out;
}

}  // namespace corockpt
