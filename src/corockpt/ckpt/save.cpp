#include "corockpt/ckpt/save.hpp"

#include <algorithm>
#include <map>

#include "corockpt/ckpt/data_file_layout.hpp"
#include "corockpt/ckpt/data_file_writer.hpp"
#include "corockpt/ckpt/detail/directory_commit.hpp"
#include "corockpt/ckpt/detail/rank0_exchange.hpp"
#include "corockpt/ckpt/snapshot.hpp"
#include "corockpt/runtime/when_all.hpp"

namespace corockpt {

namespace {

// Step 2 on every rank: this rank's data files in `tmp`, and its plan.
Task<CheckpointMetadata> write_rank_files(const Model& model, std::span<const LocalChunk> chunks, CheckpointIo io,
                                          std::string tmp, const SaveOptions& options) {
  CheckpointMetadata plan;
  plan.world_size = model.world_size();
  plan.block_size = options.checksum_block;
  for (const LocalChunk& chunk : chunks) {
    TensorRecord& record = plan.tensors[chunk.name];  // listed even when empty or not ours
    record.dtype = chunk.dtype;
    record.shape = chunk.shape;
    if (chunk.writer && !chunk.box.empty() && chunk.space != MemorySpace::host) {
      co_return fail(Errc::invalid_argument,
                     chunk.name + " lies in " + std::string(to_string(chunk.space)) +
                         " memory: save it with SaveOptions::device, or from a snapshot",
                     {.fqn = chunk.name, .operation = "save"});
    }
  }
  const std::vector<DataFileLayout> layout = layout_data_files(chunks, model.rank());
  if (!options.file_images.empty() && options.file_images.size() != layout.size()) {
    co_return fail(Errc::internal, "save: " + std::to_string(options.file_images.size()) + " file images for " +
                                       std::to_string(layout.size()) + " data files");
  }
  std::vector<DataFileContent> files(layout.size());
  std::uint64_t total = 0;
  for (std::size_t k = 0; k < layout.size(); ++k) {
    files[k].header = layout[k].header;
    for (std::size_t i : layout[k].chunks) files[k].chunks.push_back(&chunks[i]);
    if (!options.file_images.empty()) files[k].image = options.file_images[k];
    total += layout[k].size;
  }
  auto done = std::make_shared<std::uint64_t>(0);
  std::function<void(std::uint64_t)> on_written;
  if (options.progress) {
    on_written = [done, total, report = options.progress](std::uint64_t bytes) { report(*done += bytes, total); };
  }
  std::vector<Task<std::vector<WrittenChunk>>> writes;
  for (std::size_t k = 0; k < files.size(); ++k) {
    writes.push_back(write_data_file(io, tmp + "/" + layout[k].name, files[k],
                                     options.checksum_block, on_written));
  }
  auto written = all_ok(co_await when_all(std::move(writes)));
  if (!written) co_return fail(written.error());
  for (std::size_t k = 0; k < files.size(); ++k) {
    const std::string& name = layout[k].name;
    const auto& ranges = (*written)[k];
    plan.files[name] = ranges.empty() ? files[k].header.size() : ranges.back().end;
    for (std::size_t c = 0; c < files[k].chunks.size(); ++c) {
      const LocalChunk& chunk = *files[k].chunks[c];
      plan.tensors[chunk.name].chunks.push_back(
          {chunk.box, name, ranges[c].begin, ranges[c].end, std::move((*written)[k][c].crc32c)});
    }
  }
  co_return plan;
}

// Rank 0, step 3: the plans become the metadata.
Result<CheckpointMetadata> merge_plans(const Model& model, const std::vector<std::string>& plans,
                                       const SaveOptions& options) {
  CheckpointMetadata merged;
  merged.world_size = model.world_size();
  merged.meshes = model.spec().meshes;
  merged.block_size = options.checksum_block;
  merged.param_groups = param_groups_json(model.spec());
  merged.user = options.user;
  for (std::size_t r = 0; r < plans.size(); ++r) {
    const std::string who = "rank " + std::to_string(r);
    if (!plans[r].empty() && plans[r][0] == '!') {
      return fail(Errc::io, who + " could not write its data: " + plans[r].substr(1), {.operation = "save"});
    }
    auto plan = parse_checkpoint_metadata(plans[r]);
    if (!plan) return fail(Errc::internal, who + "'s plan does not parse: " + plan.error().message, {.operation = "save"});
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
  }
  for (const auto& [name, record] : merged.tensors) {
    if (auto ok = check_tiling(name, record); !ok) return fail(ok.error());
  }
  return merged;
}

// Rank 0, step 3: metadata, then the atomic rename. Returns the total data bytes.
Task<std::string> commit(CheckpointIo io, const Model& model, const std::vector<std::string>& plans, std::string tmp,
                         std::string dir, const SaveOptions& options) {
  auto merged = merge_plans(model, plans, options);
  if (!merged) co_return fail(merged.error().with_path(dir));
  if (auto ok = co_await detail::write_durable_file(io, tmp + "/" + std::string(checkpoint_metadata_file),
                                                    to_json_text(*merged));
      !ok) {
    co_return fail(ok.error());
  }
  if (auto ok = co_await detail::commit_directory(io, tmp, dir); !ok) co_return fail(ok.error());
  std::uint64_t total = 0;
  for (const auto& [file, size] : merged->files) total += size;
  co_return std::to_string(total);
}

}  // namespace

nlohmann::json param_groups_json(const ModelSpec& spec) {
  nlohmann::json groups = nlohmann::json::array();
  if (!spec.optimizer) return groups;
  const OptimizerSpec& opt = *spec.optimizer;
  nlohmann::json group = {{"lr", opt.lr}, {"weight_decay", opt.weight_decay}};
  if (opt.type == OptimizerType::adam) {
    group["betas"] = opt.betas;
    group["eps"] = opt.eps;
  } else {
    group["momentum"] = opt.momentum;
  }
  nlohmann::json params = nlohmann::json::array();
  for (const auto& unit : spec.units) {
    const int experts = unit.has_experts() ? static_cast<int>(unit.num_experts) : 1;
    for (int e = 0; e < experts; ++e) {
      for (const auto& param : spec.params) {
        if (param.unit == unit.name && param.has_optimizer_state()) params.push_back(fqn(unit, param, unit.has_experts() ? e : -1));
      }
    }
  }
  group["params"] = std::move(params);
  groups.push_back(std::move(group));
  return groups;
}

Task<SaveReport> save_chunks(const Model& model, std::span<const LocalChunk> chunks, CheckpointIo io, std::string dir,
                             SaveOptions options) {
  Communicator& world = *model.world();
  const int rank = model.rank();
  dir = detail::strip_trailing_slashes(std::move(dir));

  Result<std::string> prepared = std::string{};
  if (rank == 0) prepared = co_await detail::make_temporary_directory(io, dir);
  auto tmp = co_await detail::broadcast_outcome(world, prepared);
  if (!tmp) co_return fail(tmp.error().with_rank(rank).with_operation("save"));

  auto plan = co_await write_rank_files(model, chunks, io, *tmp, options);
  if (options.on_data_written) options.on_data_written();
  SaveReport report{.dir = dir};
  if (plan) {
    for (const auto& [file, size] : plan->files) {
      report.rank_bytes += size;
      ++report.rank_files;
    }
  }
  // A named string, not a ?: temporary: GCC 12 miscompiles those inside co_await calls.
  std::string plan_text = "!";
  if (plan) {
    plan_text = to_json_text(*plan);
  } else {
    plan_text += plan.error().to_string();
  }
  auto plans = co_await detail::gather_texts(world, plan_text);
  Result<std::string> committed = std::string{};
  if (rank == 0) {
    if (plans) {
      committed = co_await commit(io, model, *plans, *tmp, dir, options);
    } else {
      committed = fail(plans.error());
    }
    if (!committed) (void)co_await detail::remove_directory(io, *tmp);  // a crash leaves it: verify says partial
  }
  auto total = co_await detail::broadcast_outcome(world, committed);
  if (!plan) co_return fail(plan.error().with_rank(rank));  // this rank's own failure first
  if (!total) co_return fail(total.error().with_rank(rank));
  report.total_bytes = std::stoull(*total);
  co_return report;
}

Task<SaveReport> save_checkpoint(Model& model, CheckpointIo io, std::string dir) {
  return save_checkpoint(model, io, std::move(dir), SaveOptions{});
}

Task<SaveReport> save_checkpoint(Model& model, CheckpointIo io, std::string dir, SaveOptions options) {
  auto chunks = LocalChunks::of(model);
  if (!chunks) co_return fail(chunks.error().with_rank(model.rank()));
  if (!options.device) options.device = model.device();
  const bool on_device = std::ranges::any_of(chunks->chunks(), [](const LocalChunk& c) {
    return c.writer && !c.box.empty() && c.space != MemorySpace::host;
  });
  if (!on_device || !options.device) {
    co_return co_await save_chunks(model, chunks->chunks(), io, std::move(dir), std::move(options));
  }
  // Device memory is written from a copy in the device's staging memory, made for this
  // save (an AsyncCheckpointer keeps one for every save instead).
  auto snapshot = Snapshot::create(chunks->chunks(), model.rank(), options.device->staging_allocator());
  if (!snapshot) co_return fail(snapshot.error().with_rank(model.rank()));
  if (auto taken = co_await (*snapshot)->take(*io.runtime, chunks->chunks(), options.device.get()); !taken) {
    co_return fail(taken.error().with_rank(model.rank()));
  }
  options.file_images = (*snapshot)->file_images();
  co_return co_await save_chunks(model, (*snapshot)->chunks(), io, std::move(dir), std::move(options));
}

}  // namespace corockpt
