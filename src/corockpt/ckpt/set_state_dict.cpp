#include "corockpt/ckpt/set_state_dict.hpp"

#include <algorithm>
#include <cstring>
#include <optional>

#include "corockpt/ckpt/collector.hpp"
#include "corockpt/ckpt/detail/host_mirror.hpp"
#include "corockpt/ckpt/detail/shard_rows.hpp"
#include "corockpt/runtime/when_all.hpp"

namespace corockpt {

namespace {

using detail::bytes_of;
using detail::row_elements;
using detail::rows_of;
using detail::shape_text;

// Copies `count` elements, converting as PyTorch's copy_ does when the dtypes differ.
void copy_convert(const std::byte* src, DType from, std::byte* dst, DType to, std::int64_t count) {
  if (count <= 0) return;
  if (from == to) {
    std::memcpy(dst, src, bytes_of(count, to));
    return;
  }
  convert({src, bytes_of(count, from)}, from, {dst, bytes_of(count, to)}, to, static_cast<std::size_t>(count));
}

class Setter {
 public:
  Setter(Model& model, const StateDict& state, const StateDictOptions& options, SetReport& report)
      : model_(model), state_(state), options_(options), report_(report),
        state_names_(model.has_optimizer() ? optimizer_state_names(*model.spec().optimizer)
                                           : std::vector<std::string>{}) {}

  int kinds_of(const ParamSpec& p) const {
    return 1 + (p.has_optimizer_state() ? static_cast<int>(state_names_.size()) : 0);
  }

  /// The input for (fqn, kind), or null.
  const StateValue* find(const std::string& fqn, int kind) const {
    if (kind == 0) {
      auto it = state_.model.find(fqn);
      return it == state_.model.end() ? nullptr : &it->second;
    }
    auto it = state_.optim.state.find(fqn);
    if (it == state_.optim.state.end()) return nullptr;
    auto jt = it->second.find(state_names_[kind - 1]);
    return jt == it->second.end() ? nullptr : &jt->second;
  }

  std::string key(const std::string& fqn, int kind) const {
    return kind == 0 ? fqn : fqn + "/" + state_names_[kind - 1];
  }

  /// A missing input: an error with `strict` (frozen params excepted when ignored),
  /// otherwise a line in the report.
  Result<void> missing(const ParamSpec& param, const std::string& fqn, int kind) {
    if (options_.ignore_frozen_params && param.frozen) return {};
    if (options_.strict) {
      return fail(Errc::not_found, "the state dict lacks " + key(fqn, kind),
                  {.fqn = fqn, .operation = "set_state_dict"});
    }
    report_.missing.push_back(key(fqn, kind));
    return {};
  }

  /// The model's memory for (slot, kind) in per_param units and buffers.
  static TensorView target(ParamSlot& slot, int kind) { return kind == 0 ? slot.value : slot.states[kind - 1]; }

  /// Writes the full value of (slot, kind), `full` in dtype `from`, into this rank's part.
  static void apply_full(UnitInstance& inst, ParamSlot& slot, int kind, const std::byte* full, DType from) {
    const auto& shape = slot.spec->shape;
    if (slot.spec->buffer || !inst.is_flat()) {
      TensorView to = target(slot, kind);
      std::int64_t first = (slot.spec->buffer || shape.empty()) ? 0 : slot.box.offsets[0] * row_elements(shape);
      copy_convert(full + bytes_of(first, from), from, to.data, to.dtype, to.numel());
      return;
    }
    const TensorView& flat = kind == 0 ? inst.flat_value : inst.flat_states[kind - 1];
    const std::int64_t begin = inst.group_rank * inst.flat_slice;
    const std::int64_t lo = std::max(begin, slot.flat_offset);
    const std::int64_t hi = std::min(begin + inst.flat_slice, slot.flat_offset + corockpt::numel(shape));
    copy_convert(full + bytes_of(lo - slot.flat_offset, from), from, flat.data + bytes_of(lo - begin, inst.flat_dtype),
                 inst.flat_dtype, hi - lo);
  }

  /// Sharded input: buffers and per_param shards are copied in place; a flat unit's
  /// slice spans other ranks' rows, so its rows are all-gathered first.
  Task<void> set_sharded(UnitInstance& inst) {
    if (auto ok = set_buffers(inst); !ok) co_return ok;
    if (!inst.is_flat()) {
      for (auto& slot : inst.params) {
        if (slot.spec->buffer) continue;
        for (int kind = 0; kind < kinds_of(*slot.spec); ++kind) {
          const StateValue* in = find(slot.fqn, kind);
          if (!in) {
            if (auto ok = missing(*slot.spec, slot.fqn, kind); !ok) co_return ok;
            continue;
          }
          if (auto ok = check_shard(slot, kind, *in); !ok) co_return ok;
          const TensorView& v = local_view(*in);
          TensorView to = target(slot, kind);
          copy_convert(v.data, v.dtype, to.data, to.dtype, to.numel());
        }
      }
      co_return Result<void>{};
    }
    // flat: every rank packs its rows of every param and kind (in the model's dtype) and
    // a presence byte for each, one all-gather-v, and each rank takes its slice from the
    // full values of the tensors every rank had (a missing one leaves the model's as is).
    const int n = inst.group_size();
    std::size_t pieces = 0;
    for (auto& slot : inst.params) {
      if (!slot.spec->buffer) pieces += kinds_of(*slot.spec);
    }
    std::vector<std::size_t> counts =
        detail::row_bytes_per_rank(inst.params, n, [this](const ParamSlot& slot) { return kinds_of(*slot.spec); });
    for (auto& c : counts) c += pieces;
    std::vector<std::byte> send(counts[inst.group_rank]);
    const std::size_t flags_at = send.size() - pieces;
    std::size_t at = 0, piece = 0;
    Result<void> first_problem;
    for (auto& slot : inst.params) {
      if (slot.spec->buffer) continue;
      for (int kind = 0; kind < kinds_of(*slot.spec); ++kind, ++piece) {
        const std::int64_t count = slot.box.numel();
        const StateValue* in = find(slot.fqn, kind);
        Result<void> ok = in ? check_shard(slot, kind, *in) : missing(*slot.spec, slot.fqn, kind);
        if (in && ok) {
          copy_convert(local_view(*in).data, local_view(*in).dtype, send.data() + at, slot.spec->dtype, count);
          send[flags_at + piece] = std::byte{1};
        }
        if (!ok && first_problem) first_problem = ok;  // still take part: the others wait for us
        at += bytes_of(count, slot.spec->dtype);
      }
    }
    std::size_t total = 0;
    std::vector<std::size_t> cursor(n);
    for (int r = 0; r < n; ++r) {
      cursor[r] = total;
      total += counts[r];
    }
    std::vector<std::byte> recv(total);
    if (auto ok = co_await inst.group->all_gather_v(send, recv, counts); !ok) co_return ok;
    if (!first_problem) co_return first_problem;
    const std::vector<std::size_t> start = cursor;  // each rank's segment
    piece = 0;
    for (auto& slot : inst.params) {
      if (slot.spec->buffer) continue;
      const auto& shape = slot.spec->shape;
      const std::int64_t row = row_elements(shape);
      for (int kind = 0; kind < kinds_of(*slot.spec); ++kind, ++piece) {
        std::vector<std::byte> full(bytes_of(corockpt::numel(shape), slot.spec->dtype));
        bool everyone_had_it = true;
        for (int r = 0; r < n; ++r) {
          Range rows = rows_of(shape, n, r);
          std::size_t bytes = bytes_of(rows.length * row, slot.spec->dtype);
          std::memcpy(full.data() + bytes_of(rows.offset * row, slot.spec->dtype), recv.data() + cursor[r], bytes);
          cursor[r] += bytes;
          everyone_had_it = everyone_had_it && recv[start[r] + counts[r] - pieces + piece] == std::byte{1};
        }
        if (everyone_had_it) apply_full(inst, slot, kind, full.data(), slot.spec->dtype);
      }
    }
    co_return Result<void>{};
  }

  /// Full input held by this rank.
  Result<void> set_full_local(UnitInstance& inst) {
    for (auto& slot : inst.params) {
      for (int kind = 0; kind < kinds_of(*slot.spec); ++kind) {
        const StateValue* in = find(slot.fqn, kind);
        if (!in) {
          if (auto ok = missing(*slot.spec, slot.fqn, kind); !ok) return ok;
          continue;
        }
        const TensorView& v = local_view(*in);
        if (is_dtensor(*in) || v.shape != slot.spec->shape) return shape_error(slot.fqn, kind, v.shape);
        apply_full(inst, slot, kind, v.data, v.dtype);
      }
    }
    return {};
  }

  /// Full input on rank 0 only: for every instance of every unit, in registration order
  /// on every rank, rank 0 broadcasts a status (missing keys, step) and then the values.
  Task<void> set_full_from_rank0() {
    const auto& world = model_.world();
    const bool root = model_.rank() == 0;
    double step = model_.step();
    for (const auto& unit : model_.spec().units) {
      std::vector<int> experts;
      for (int e = 0; e < std::max<std::int64_t>(unit.num_experts, 0); ++e) experts.push_back(e);
      if (!unit.has_experts()) experts = {-1};
      for (int expert : experts) {
        // The layout: every param (buffers too) and kind, full, in the model's dtype.
        std::size_t total = 0;
        for (const auto& p : model_.spec().params) {
          if (p.unit == unit.name) total += bytes_of(corockpt::numel(p.shape), p.dtype) * kinds_of(p);
        }
        std::vector<std::byte> bytes(total);
        double status[2] = {0, step};  // missing keys on rank 0, its step
        std::string first_missing;
        if (root) {
          std::size_t at = 0;
          for (const auto& p : model_.spec().params) {
            if (p.unit != unit.name) continue;
            std::string name = fqn(unit, p, expert);
            for (int kind = 0; kind < kinds_of(p); ++kind) {
              const std::int64_t count = corockpt::numel(p.shape);
              const StateValue* in = find(name, kind);
              if (in && !is_dtensor(*in) && local_view(*in).shape == p.shape) {
                copy_convert(local_view(*in).data, local_view(*in).dtype, bytes.data() + at, p.dtype, count);
              } else if (!(options_.ignore_frozen_params && p.frozen)) {
                if (first_missing.empty()) first_missing = key(name, kind);
                status[0] += 1;
              }
              at += bytes_of(count, p.dtype);
            }
          }
          status[1] = any_state_step().value_or(step);
        }
        if (auto ok = co_await world->broadcast(std::as_writable_bytes(std::span<double>(status, 2)), 0); !ok) co_return ok;
        step = status[1];
        if (status[0] > 0 && options_.strict) {
          co_return fail(Errc::not_found,
                         root ? "the state dict lacks " + first_missing + " (and " +
                                    std::to_string(static_cast<int>(status[0]) - 1) + " more keys)"
                              : "rank 0's state dict lacks " + std::to_string(static_cast<int>(status[0])) +
                                    " keys of unit " + unit.name,
                         {.operation = "set_state_dict"});
        }
        if (auto ok = co_await world->broadcast(bytes, 0); !ok) co_return ok;
        for (auto& inst : model_.instances()) {
          if (inst.unit != &unit || inst.expert != expert) continue;
          std::size_t at = 0;
          for (auto& slot : inst.params) {
            for (int kind = 0; kind < kinds_of(*slot.spec); ++kind) {
              apply_full(inst, slot, kind, bytes.data() + at, slot.spec->dtype);
              at += bytes_of(corockpt::numel(slot.spec->shape), slot.spec->dtype);
            }
          }
        }
      }
    }
    model_.set_step(step);
    co_return Result<void>{};
  }

  /// Adam's step of `fqn` in the state dict, if it has one.
  std::optional<double> state_step(const std::string& fqn) const {
    auto states = state_.optim.state.find(fqn);
    if (states == state_.optim.state.end()) return std::nullopt;
    auto it = states->second.find("step");
    if (it == states->second.end()) return std::nullopt;
    const TensorView& v = local_view(it->second);
    double out = 0;
    convert({v.data, size_of(v.dtype)}, v.dtype, std::as_writable_bytes(std::span<double>(&out, 1)), DType::float64, 1);
    return out;
  }

  /// Adam's step, from any param's state (for rank 0's broadcast: params step together).
  std::optional<double> any_state_step() const {
    for (const auto& [fqn, states] : state_.optim.state) {
      if (auto step = state_step(fqn)) return step;
    }
    return std::nullopt;
  }

  /// Every param this rank holds takes its own step from the state dict.
  void set_steps() {
    for (auto& inst : model_.instances()) {
      for (auto& slot : inst.params) {
        if (auto step = state_step(slot.fqn)) slot.step = *step;
      }
    }
  }

 private:
  Result<void> set_buffers(UnitInstance& inst) {
    for (auto& slot : inst.params) {
      if (!slot.spec->buffer) continue;
      const StateValue* in = find(slot.fqn, 0);
      if (!in) {
        if (auto ok = missing(*slot.spec, slot.fqn, 0); !ok) return ok;
        continue;
      }
      const TensorView& v = local_view(*in);
      if (v.shape != slot.spec->shape) return shape_error(slot.fqn, 0, v.shape);
      copy_convert(v.data, v.dtype, slot.value.data, slot.value.dtype, slot.value.numel());
    }
    return {};
  }

  Result<void> check_shard(const ParamSlot& slot, int kind, const StateValue& in) const {
    if (!is_dtensor(in)) return shape_error(slot.fqn, kind, local_view(in).shape);
    const auto& d = std::get<DTensor>(in);
    if (d.global_shape != slot.spec->shape || d.box != slot.box) {
      return fail(Errc::invalid_argument,
                  key(slot.fqn, kind) + ": the shard " + d.box.to_string() + " of a tensor of " +
                      std::to_string(d.global_shape.size()) + " dims is not this rank's " + slot.box.to_string(),
                  {.fqn = slot.fqn, .operation = "set_state_dict"});
    }
    return {};
  }

  Result<void> shape_error(const std::string& fqn, int kind, const std::vector<std::int64_t>& got) const {
    return fail(Errc::invalid_argument, key(fqn, kind) + ": a full tensor of the model's shape was expected, got " +
                                            shape_text(got),
                {.fqn = fqn, .operation = "set_state_dict"});
  }

  Model& model_;
  const StateDict& state_;
  const StateDictOptions& options_;
  SetReport& report_;
  std::vector<std::string> state_names_;
};

Task<void> set_unit(Setter& setter, UnitInstance& inst) { co_return co_await setter.set_sharded(inst); }

bool any_on_device(const StateDict& state) {
  for (const auto& [fqn, value] : state.model) {
    if (local_view(value).space != MemorySpace::host) return true;
  }
  for (const auto& [fqn, states] : state.optim.state) {
    for (const auto& [name, value] : states) {
      if (local_view(value).space != MemorySpace::host) return true;
    }
  }
  return false;
}

// A model in device memory: the host code below runs on a host mirror of the model (and
// a host copy of `state` when it holds device values), then the mirror is written back.
// set_state_dict is load-time work; this keeps one implementation of its rules.
Task<SetReport> set_through_host(Model& model, const StateDict& state, StateDictOptions options) {
  std::optional<StateDict> host_copy;
  if (any_on_device(state)) {
    auto copied = co_await state_dict_to_host(state, model.device().get());
    if (!copied) co_return fail(std::move(copied.error().with_rank(model.rank())));
    host_copy = std::move(*copied);
  }
  auto mirror = co_await detail::HostMirror::make(model);
  if (!mirror) co_return fail(std::move(mirror.error()));
  const StateDict* input = &state;
  if (host_copy) input = &*host_copy;
  auto report = co_await set_state_dict(model, *input, options);
  if (!report) co_return report;  // the mirror goes: the device memory is as it was
  if (auto ok = co_await (*mirror)->write_back(); !ok) co_return fail(std::move(ok.error().with_rank(model.rank())));
  co_return report;
}

}  // namespace

Task<SetReport> set_state_dict(Model& model, const StateDict& state, StateDictOptions options) {
  if (model.memory_space() != MemorySpace::host) co_return co_await set_through_host(model, state, options);
  SetReport report;
  Setter setter(model, state, options, report);
  if (options.full_state_dict && options.broadcast_from_rank0) {
    if (auto ok = co_await setter.set_full_from_rank0(); !ok) co_return fail(ok.error().with_rank(model.rank()));
    co_return report;
  }
  if (options.full_state_dict) {
    for (auto& inst : model.instances()) {
      if (auto ok = setter.set_full_local(inst); !ok) co_return fail(ok.error().with_rank(model.rank()));
    }
  } else {
    // One task per unit instance, in registration order, as in get_state_dict.
    std::vector<Task<void>> units;
    for (auto& inst : model.instances()) units.push_back(set_unit(setter, inst));
    if (auto ok = all_ok(co_await when_all(std::move(units))); !ok) co_return fail(ok.error().with_rank(model.rank()));
  }
  setter.set_steps();
  co_return report;
}

}  // namespace corockpt
