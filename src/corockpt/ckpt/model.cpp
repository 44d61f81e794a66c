#include "corockpt/ckpt/model.hpp"

#include "corockpt/ckpt/detail/owned_tensors.hpp"
#include "corockpt/ckpt/detail/shard_rows.hpp"

#include <algorithm>
#include <cstring>
#include <map>

namespace corockpt {


std::vector<std::string> optimizer_state_names(const OptimizerSpec& optimizer) {
  if (optimizer.type == OptimizerType::adam) return {"exp_avg", "exp_avg_sq"};
  if (optimizer.momentum != 0.0) return {"momentum_buffer"};
  return {};
}

Task<std::unique_ptr<Model>> Model::build(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> world) {
  if (auto ok = validate(spec); !ok) co_return fail(ok.error());
  if (!world || world->size() != spec.world_size) {
    co_return fail(Errc::invalid_argument, "the spec's world_size " + std::to_string(spec.world_size) +
                                               " does not match the " + std::to_string(world ? world->size() : 0) +
                                               " ranks of the communicator");
  }
  std::unique_ptr<Model> model(new Model(spec, rank, world));
  const std::vector<std::string> state_names =
      spec.optimizer ? optimizer_state_names(*spec.optimizer) : std::vector<std::string>{};

  // Units sharing a mesh and a shard dim share the group communicator. Every rank walks
  // the units in the same order, so the splits (collectives on `world`) line up.
  std::map<std::string, std::shared_ptr<Communicator>> groups;
  for (const auto& unit : spec.units) {
    auto mesh = unit_mesh(spec, unit);
    if (!mesh) co_return fail(mesh.error());
    auto experts = experts_held(unit, *mesh, rank);
    if (!experts) co_return fail(experts.error());
    auto placement = param_placement(unit, *mesh, rank);
    if (!placement) co_return fail(placement.error());
    auto group_mesh = shard_group(unit, *mesh, rank);
    if (!group_mesh) co_return fail(group_mesh.error());
    auto group_rank = group_mesh->index_of(rank);
    if (!group_rank) co_return fail(group_rank.error());

    std::string key = unit.mesh + "/" + unit.shard_dim;
    if (!groups.contains(key)) {
      const auto& ranks = group_mesh->ranks();
      int color = *std::min_element(ranks.begin(), ranks.end());
      auto comm = co_await world->split(color, *group_rank);
      if (!comm) co_return fail(comm.error().with_operation("split for unit " + unit.name));
      groups[key] = *comm;
    }

    for (int expert : *experts) {
      UnitInstance inst;
      inst.unit = &unit;
      inst.expert = expert;
      inst.placement = *placement;
      inst.group = groups[key];
      inst.group_ranks = group_mesh->ranks();
      inst.group_rank = *group_rank;
      bool first = true;
      for (const auto& param : spec.params) {
        if (param.unit != unit.name) continue;
        ParamSlot slot;
        slot.fqn = fqn(unit, param, expert);
        slot.spec = &param;
        if (param.buffer) {
          slot.box = whole_box(param.shape);
        } else {
          auto box = local_box(param.shape, placement->mesh, placement->placements, rank);
          if (!box) co_return fail(box.error().with_fqn(slot.fqn));
          slot.box = std::move(*box);
          slot.flat_offset = inst.flat_total;
          inst.flat_total += corockpt::numel(param.shape);
          if (first) inst.flat_dtype = param.dtype;
          first = false;
        }
        slot.states.resize(param.has_optimizer_state() ? state_names.size() : 0);
        inst.params.push_back(std::move(slot));
      }
      const std::int64_t n = inst.group_size();
      inst.flat_slice = (inst.flat_total + n - 1) / n;
      inst.flat_states.resize(state_names.size());
      model->instances_.push_back(std::move(inst));
    }
  }
  co_return model;
}

void Model::allocate() {
  detail::for_each_owned_tensor(instances_, [this](const std::string&, DType dtype, const std::vector<std::int64_t>& shape,
                                           TensorView& view) {
    auto& bytes = memory_.emplace_back(static_cast<std::size_t>(corockpt::numel(shape)) * size_of(dtype));
    view = TensorView{bytes.data(), dtype, shape, MemorySpace::host};
  });
}

Task<void> Model::move_to(std::shared_ptr<Device> device) {
  std::vector<TensorView*> views;
  for (auto& inst : instances_) {
    for (auto& slot : inst.params) {
      views.push_back(&slot.value);
      for (auto& state : slot.states) views.push_back(&state);
    }
    views.push_back(&inst.flat_value);
    for (auto& state : inst.flat_states) views.push_back(&state);
  }
  for (TensorView* view : views) {
    if (!view->data || view->space != MemorySpace::host || view->nbytes() == 0) continue;
    auto memory = device->allocate(view->nbytes());
    if (!memory) co_return fail(memory.error().with_rank(rank_));
    if (auto ok = co_await device->copy_to_device(memory->bytes(), view->bytes()); !ok) {
      co_return fail(ok.error().with_rank(rank_));
    }
    view->data = memory->data();
    view->space = device->space();
    device_memory_.push_back(std::move(*memory));
  }
  memory_.clear();
  device_ = std::move(device);
  co_return Result<void>{};
}

MemorySpace Model::memory_space() const {
  for (const auto& inst : instances_) {
    if (inst.flat_value.space != MemorySpace::host) return inst.flat_value.space;
    for (const auto& slot : inst.params) {
      if (slot.value.space != MemorySpace::host) return slot.value.space;
      for (const auto& state : slot.states) {
        if (state.space != MemorySpace::host) return state.space;
      }
    }
    for (const auto& state : inst.flat_states) {
      if (state.space != MemorySpace::host) return state.space;
    }
  }
  return MemorySpace::host;
}

namespace {

using detail::shape_text;

// `view` must be `dtype` and `shape`; `what` names it in the error.
Result<void> check_view(const TensorView& view, DType dtype, const std::vector<std::int64_t>& shape,
                        const std::string& what, const std::string& fqn) {
  if (!view.data && corockpt::numel(shape) > 0) {
    return fail(Errc::invalid_argument, what + ": null memory", {.fqn = fqn, .operation = "bind"});
  }
  if (view.dtype != dtype || view.shape != shape) {
    return fail(Errc::invalid_argument,
                what + ": expected " + std::string(to_string(dtype)) + " " + shape_text(shape) + ", got " +
                    std::string(to_string(view.dtype)) + " " + shape_text(view.shape),
                {.fqn = fqn, .operation = "bind"});
  }
  return {};
}

Result<void> check_states(const std::vector<TensorView>& states, std::size_t expected, DType dtype,
                          const std::vector<std::int64_t>& shape, const std::string& fqn) {
  if (states.size() != expected) {
    return fail(Errc::invalid_argument,
                "expected " + std::to_string(expected) + " optimizer states, got " + std::to_string(states.size()),
                {.fqn = fqn, .operation = "bind"});
  }
  for (std::size_t i = 0; i < states.size(); ++i) {
    if (auto ok = check_view(states[i], dtype, shape, "optimizer state " + std::to_string(i), fqn); !ok) return ok;
  }
  return {};
}

}  // namespace

Result<void> Model::bind(const std::string& name, TensorView value, std::vector<TensorView> states) {
  for (auto& inst : instances_) {
    for (auto& slot : inst.params) {
      if (slot.fqn != name) continue;
      if (inst.is_flat() && !slot.spec->buffer) {
        return fail(Errc::invalid_argument, "a flat unit's params are bound through bind_flat (unit " +
                                                inst.unit->name + ")", {.fqn = name, .operation = "bind"});
      }
      if (auto ok = check_view(value, slot.spec->dtype, slot.box.sizes, "value", name); !ok) return ok;
      if (auto ok = check_states(states, slot.states.size(), slot.spec->dtype, slot.box.sizes, name); !ok) return ok;
      slot.value = std::move(value);
      slot.states = std::move(states);
      return {};
    }
  }
  return fail(Errc::not_found, "rank " + std::to_string(rank_) + " holds no param or buffer " + name,
              {.fqn = name, .operation = "bind"});
}

Result<void> Model::bind_flat(const std::string& unit, int expert, TensorView slice, std::vector<TensorView> states) {
  for (auto& inst : instances_) {
    if (inst.unit->name != unit || inst.expert != expert) continue;
    std::string what = "unit " + unit + (expert >= 0 ? " expert " + std::to_string(expert) : "");
    if (!inst.is_flat()) {
      return fail(Errc::invalid_argument, what + " is not flat: bind its params one by one", {.operation = "bind"});
    }
    if (auto ok = check_view(slice, inst.flat_dtype, {inst.flat_slice}, what + " slice", ""); !ok) return ok;
    if (auto ok = check_states(states, inst.flat_states.size(), inst.flat_dtype, {inst.flat_slice}, ""); !ok) {
      Error e = ok.error();
      e.message = what + ": " + e.message;
      return fail(std::move(e));
    }
    inst.flat_value = std::move(slice);
    inst.flat_states = std::move(states);
    return {};
  }
  return fail(Errc::not_found, "rank " + std::to_string(rank_) + " holds no instance of unit " + unit +
                                   (expert >= 0 ? " expert " + std::to_string(expert) : ""),
              {.operation = "bind"});
}

double Model::step() const {
  double step = 0;
  for (const auto& inst : instances_) {
    for (const auto& slot : inst.params) step = std::max(step, slot.step);
  }
  return step;
}

void Model::set_step(double step) {
  for (auto& inst : instances_) {
    for (auto& slot : inst.params) {
      if (slot.spec->has_optimizer_state()) slot.step = step;
    }
  }
}

}  // namespace corockpt
