#include "corockpt/ckpt/detail/lazy_optimizer_state.hpp"

namespace corockpt::detail {

namespace {

double read_element(const TensorView& view, std::int64_t i) {
  double out = 0;
  std::size_t size = size_of(view.dtype);
  convert(std::span<const std::byte>(view.data + i * size, size), view.dtype,
          std::as_writable_bytes(std::span<double>(&out, 1)), DType::float64, 1);
  return out;
}

void write_element(const TensorView& view, std::int64_t i, double value) {
  std::size_t size = size_of(view.dtype);
  convert(std::as_bytes(std::span<const double>(&value, 1)), DType::float64,
          std::span<std::byte>(view.data + i * size, size), view.dtype, 1);
}

}  // namespace

void initialize_optimizer_state(Model& model) {
  if (!model.has_optimizer() || model.step() > 0) return;
  const OptimizerSpec& opt = *model.spec().optimizer;
  model.set_step(1);
  if (opt.weight_decay == 0.0) return;  // zero gradients: the states stay zero
  // One step with gradient g = weight_decay * p (zero gradient plus L2 decay), lr 0.
  auto init = [&](const TensorView& value, const std::vector<TensorView>& states) {
    for (std::int64_t i = 0; i < value.numel(); ++i) {
      double g = opt.weight_decay * read_element(value, i);
      if (opt.type == OptimizerType::adam) {
        write_element(states[0], i, (1 - opt.betas[0]) * g);
        write_element(states[1], i, (1 - opt.betas[1]) * g * g);
      } else if (!states.empty()) {
        write_element(states[0], i, g);  // SGD's first momentum buffer is the gradient
      }
    }
  };
  for (auto& inst : model.instances()) {
    if (inst.is_flat()) {
      if (!inst.flat_states.empty() && inst.flat_value.data) init(inst.flat_value, inst.flat_states);
    }
    for (auto& slot : inst.params) {
      if (slot.states.empty() || !slot.value.data || (inst.is_flat() && !slot.spec->buffer)) continue;
      init(slot.value, slot.states);
    }
  }
}

}  // namespace corockpt::detail
