#include "examples/train/synthetic_training.hpp"

#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>

#include "corockpt/ckpt/local_chunks.hpp"

namespace corockpt::example {

std::string training_spec_json(const TrainingShape& shape) {
  using nlohmann::json;
  const int dp = shape.world_size / std::max(shape.expert_groups, 1);
  const std::int64_t h = shape.hidden;
  json spec = {{"world_size", shape.world_size},
               {"meshes",
                {{"global", {{"shape", {shape.world_size}}, {"dim_names", {"fsdp"}}}},
                 {"dp_ep", {{"shape", {dp, shape.expert_groups}}, {"dim_names", {"dp", "ep"}}}}}},
               {"optimizer", {{"type", "adam"}, {"lr", 1e-3}}}};
  json units = json::array(), params = json::array();
  auto param = [&](const std::string& unit, const std::string& name, std::vector<std::int64_t> dims) {
    params.push_back({{"unit", unit}, {"name", name}, {"shape", dims}});
  };
  units.push_back({{"name", "root"}, {"prefix", ""}, {"mesh", "global"}, {"layout", shape.layout}});
  param("root", "embed.weight", {h, h});
  for (int l = 0; l < shape.layers; ++l) {
    const std::string dense = "layer" + std::to_string(l), experts = dense + ".experts";
    const std::string prefix = "layers." + std::to_string(l) + ".";
    units.push_back({{"name", dense}, {"prefix", prefix}, {"mesh", "global"}, {"layout", shape.layout}});
    units.push_back({{"name", experts}, {"prefix", prefix + "experts.{expert}."}, {"mesh", "dp_ep"},
                     {"shard_dim", "dp"}, {"expert_dim", "ep"}, {"num_experts", shape.experts},
                     {"layout", shape.layout}});
    param(dense, "attn.weight", {h, h});
    param(dense, "attn.bias", {h});
    param(experts, "net1.weight", {h, h});
    param(experts, "net1.bias", {h});
    param(experts, "net2.weight", {h, h});
  }
  spec["units"] = units;
  spec["params"] = params;
  return spec.dump(1);
}

float synthetic_gradient(std::uint32_t name_hash, std::int64_t index, std::int64_t step) {
  const std::uint64_t mixed = name_hash + static_cast<std::uint64_t>(index) * 2654435761u +
                              static_cast<std::uint64_t>(step) * 40503u;
  return static_cast<float>(static_cast<std::int64_t>(mixed % 2001) - 1000) / 4096.0f;
}

namespace {

// The common dtypes directly (this is the hot loop), others through convert().
float load(const std::byte* base, std::int64_t i, DType dtype) {
  float out;
  if (dtype == DType::float32) {
    std::memcpy(&out, base + i * 4, 4);
    return out;
  }
  if (dtype == DType::bfloat16) {
    std::uint16_t bits;
    std::memcpy(&bits, base + i * 2, 2);
    return bfloat16_bits_to_float(bits);
  }
  convert({base + i * size_of(dtype), size_of(dtype)}, dtype, std::as_writable_bytes(std::span<float>(&out, 1)),
          DType::float32, 1);
  return out;
}

void store(std::byte* base, std::int64_t i, DType dtype, float value) {
  if (dtype == DType::float32) {
    std::memcpy(base + i * 4, &value, 4);
    return;
  }
  if (dtype == DType::bfloat16) {
    const std::uint16_t bits = float_to_bfloat16_bits(value);
    std::memcpy(base + i * 2, &bits, 2);
    return;
  }
  convert(std::as_bytes(std::span<const float>(&value, 1)), DType::float32, {base + i * size_of(dtype), size_of(dtype)},
          dtype, 1);
}

std::uint64_t mix(std::uint64_t x) {  // splitmix64's finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

TrainingPieces training_pieces(Model& model) {
  TrainingPieces out;
  auto add = [&](ParamSlot& slot, std::int64_t first, std::int64_t count, DType dtype, std::byte* value, std::byte* m,
                 std::byte* v) {
    if (count <= 0) return;
    out.pieces.push_back({slot.fqn, fnv1a32(slot.fqn), first, count, dtype, value, m, v, &slot, out.gradients});
    out.gradients += static_cast<std::size_t>(count);
    out.state_bytes += 3 * static_cast<std::uint64_t>(count) * size_of(dtype);
  };
  for (std::uint32_t unit = 0; unit < model.instances().size(); ++unit) {
    auto& inst = model.instances()[unit];
    const std::int64_t slice_begin = inst.group_rank * inst.flat_slice;
    const std::size_t first_piece = out.pieces.size();
    for (auto& slot : inst.params) {
      if (!slot.spec->has_optimizer_state()) continue;
      out.slots.push_back(&slot);
      out.slot_units.push_back(unit);
      if (!inst.is_flat()) {
        // A Shard(0) shard is whole rows: a contiguous range of global indices.
        const std::int64_t row = slot.box.ndim() == 0 ? 1 : slot.box.numel() / std::max<std::int64_t>(slot.box.sizes[0], 1);
        const std::int64_t first = slot.box.ndim() == 0 ? 0 : slot.box.offsets[0] * row;
        add(slot, first, slot.box.numel(), slot.spec->dtype, slot.value.data, slot.states[0].data, slot.states[1].data);
        continue;
      }
      const std::int64_t size = corockpt::numel(slot.spec->shape);
      const std::int64_t from = std::max(slice_begin, slot.flat_offset);
      const std::int64_t to = std::min(slice_begin + inst.flat_slice, slot.flat_offset + size);
      const std::size_t at = static_cast<std::size_t>(from - slice_begin) * size_of(inst.flat_dtype);
      add(slot, from - slot.flat_offset, to - from, inst.flat_dtype, inst.flat_value.data + at,
          inst.flat_states[0].data + at, inst.flat_states[1].data + at);
    }
    for (std::size_t p = first_piece; p < out.pieces.size(); ++p) out.pieces[p].unit = unit;
  }
  return out;
}

AdamStepScalars adam_step_scalars(const OptimizerSpec& opt, double step) {
  // PyTorch's single-tensor Adam: scalars in double, elements in float32.
  const double bias1 = 1 - std::pow(opt.betas[0], step);
  const double bias2_sqrt = std::sqrt(1 - std::pow(opt.betas[1], step));
  return {.step_size = static_cast<float>(opt.lr / bias1),
          .bias2_sqrt = static_cast<float>(bias2_sqrt),
          .beta1 = static_cast<float>(opt.betas[0]),
          .beta2 = static_cast<float>(opt.betas[1]),
          .decay = static_cast<float>(opt.weight_decay),
          .eps = static_cast<float>(opt.eps)};
}

SyntheticTrainer::SyntheticTrainer(Model& model) : model_(model), trained_(training_pieces(model)) {
  grads_.resize(trained_.gradients);
}

void SyntheticTrainer::backward(std::int64_t step) {
  for (const TrainingPiece& p : trained_.pieces) {
    float* g = grads_.data() + p.grad_at;
    for (std::int64_t i = 0; i < p.count; ++i) g[i] = synthetic_gradient(p.name_hash, p.first_index + i, step);
  }
}

void SyntheticTrainer::optimizer_step(std::optional<std::uint32_t> unit) {
  const OptimizerSpec& opt = *model_.spec().optimizer;
  // Every param steps, also those this rank holds no element of (as PyTorch's
  // optimizer steps a param with an empty shard): the step count is the same everywhere.
  for (std::size_t i = 0; i < trained_.slots.size(); ++i) {
    if (!unit || trained_.slot_units[i] == *unit) trained_.slots[i]->step += 1;
  }
  for (const TrainingPiece& p : trained_.pieces) {
    if (unit && p.unit != *unit) continue;
    const AdamStepScalars s = adam_step_scalars(opt, p.slot->step);
    const float* g = grads_.data() + p.grad_at;
    // cuda_kernels.cu's adam_kernel repeats this body operation for operation: change both.
    for (std::int64_t i = 0; i < p.count; ++i) {
      float param = load(p.value, i, p.dtype);
      const float grad = g[i] + s.decay * param;
      float m = load(p.exp_avg, i, p.dtype);
      float v = load(p.exp_avg_sq, i, p.dtype);
      m = m + (grad - m) * (1 - s.beta1);
      v = v * s.beta2 + (1 - s.beta2) * grad * grad;
      const float denom = std::sqrt(v) / s.bias2_sqrt + s.eps;
      param = param - s.step_size * (m / denom);
      store(p.value, i, p.dtype, param);
      store(p.exp_avg, i, p.dtype, m);
      store(p.exp_avg_sq, i, p.dtype, v);
    }
  }
}

namespace {

// The digest of one chunk whose bytes (in host memory) are `bytes`.
std::uint64_t chunk_digest(const LocalChunk& chunk, std::span<const std::byte> bytes) {
  const std::uint64_t name = fnv1a32(chunk.name);
  const std::size_t size = size_of(chunk.dtype);
  const Box& box = chunk.box;
  std::uint64_t digest = 0;
  std::vector<std::int64_t> position(box.ndim(), 0);
  for (std::int64_t i = 0; i < box.numel(); ++i) {
    std::int64_t index = 0;
    for (int d = 0; d < box.ndim(); ++d) index = index * chunk.shape[d] + box.offsets[d] + position[d];
    std::uint64_t bits = 0;
    std::memcpy(&bits, bytes.data() + i * size, size);
    digest += mix(mix(name ^ (static_cast<std::uint64_t>(index) << 32)) ^ bits);
    for (int d = box.ndim() - 1; d >= 0; --d) {
      if (++position[d] < box.sizes[d]) break;
      position[d] = 0;
    }
  }
  return digest;
}

}  // namespace

std::uint64_t state_digest(Model& model) {
  auto chunks = LocalChunks::of(model);
  if (!chunks) return 0;
  chunks->load_steps();
  std::uint64_t digest = 0;
  for (const LocalChunk& chunk : chunks->chunks()) {
    if (chunk.writer) digest += chunk_digest(chunk, chunk.bytes);
  }
  return digest;
}

Task<std::uint64_t> state_digest(Model& model, std::shared_ptr<Device> device) {
  auto chunks = LocalChunks::of(model);
  if (!chunks) co_return fail(chunks.error());
  chunks->load_steps();
  bool ordered = false;
  std::uint64_t digest = 0;
  std::vector<std::byte> host;
  for (const LocalChunk& chunk : chunks->chunks()) {
    if (!chunk.writer) continue;
    if (chunk.space == MemorySpace::host || chunk.bytes.empty()) {
      digest += chunk_digest(chunk, chunk.bytes);
      continue;
    }
    if (!device) co_return fail(Errc::invalid_argument, chunk.name + " lies in device memory and no device was given");
    if (!ordered) {
      // After the training's last queued step, like a snapshot.
      if (auto ok = device->order_after_compute(); !ok) co_return fail(ok.error());
      ordered = true;
    }
    host.resize(chunk.bytes.size());
    const std::span<std::byte> to(host);
    const std::span<const std::byte> from(chunk.bytes);
    if (auto copied = co_await device->copy_to_host(to, from); !copied) co_return fail(copied.error());
    digest += chunk_digest(chunk, to);
  }
  co_return digest;
}

}  // namespace corockpt::example
