#include "corockpt/ckpt/detail/rank_plan.hpp"

namespace corockpt::detail {

CheckpointMetadata rank_plan(std::span<const LocalChunk> chunks, int world_size, std::uint64_t checksum_block,
                             std::span<const DataFileLayout> layout, std::vector<std::vector<WrittenChunk>> written) {
  CheckpointMetadata plan;
  plan.world_size = world_size;
  plan.block_size = checksum_block;
  for (const LocalChunk& chunk : chunks) {
    TensorRecord& record = plan.tensors[chunk.name];  // listed even when empty or not ours
    record.dtype = chunk.dtype;
    record.shape = chunk.shape;
  }
  for (std::size_t k = 0; k < layout.size(); ++k) {
    const std::string& name = layout[k].name;
    auto& ranges = written[k];
    plan.files[name] = ranges.empty() ? layout[k].header.size() : ranges.back().end;
    for (std::size_t c = 0; c < layout[k].chunks.size(); ++c) {
      const LocalChunk& chunk = chunks[layout[k].chunks[c]];
      plan.tensors[chunk.name].chunks.push_back(
          {chunk.box, name, ranges[c].begin, ranges[c].end, std::move(ranges[c].crc32c)});
    }
  }
  return plan;
}

Result<CheckpointMetadata> merge_plans(std::span<const std::string> plans, CheckpointMetadata merged) {
  for (std::size_t r = 0; r < plans.size(); ++r) {
    const std::string who = "rank " + std::to_string(r);
    if (!plans[r].empty() && plans[r][0] == '!') {
      return fail(Errc::io, who + " could not write its data: " + plans[r].substr(1), {.operation = "save"});
    }
    auto plan = parse_checkpoint_metadata(plans[r]);
    if (!plan) {
      return fail(Errc::internal, who + "'s plan does not parse: " + plan.error().message, {.operation = "save"});
    }
    for (auto& [file, size] : plan->files) merged.files[file] = size;
    for (auto& [name, record] : plan->tensors) {
      auto [it, fresh] = merged.tensors.try_emplace(name, record);
      if (fresh) continue;
      if (it->second.dtype != record.dtype || it->second.shape != record.shape) {
        return fail(Errc::invalid_argument, who + " holds " + name + " with another dtype or shape than rank 0",
                    {.fqn = name, .operation = "save"});
      }
      for (auto& chunk : record.chunks) it->second.chunks.push_back(std::move(chunk));
    }
    for (auto& [name, object] : plan->objects) {
      if (!merged.objects.try_emplace(name, std::move(object)).second) {
        return fail(Errc::invalid_argument, who + " wrote object " + name + ", which another rank wrote too",
                    {.fqn = name, .operation = "save"});
      }
    }
  }
  for (const auto& [name, record] : merged.tensors) {
    if (auto ok = check_tiling(name, record); !ok) return fail(ok.error());
    if (merged.objects.contains(name)) {
      return fail(Errc::invalid_argument, name + " is saved both as a tensor and as an object",
                  {.fqn = name, .operation = "save"});
    }
  }
  return merged;
}

}  // namespace corockpt::detail
