#include "corockpt/ckpt/save.hpp"

#include <algorithm>
#include <map>
#include <optional>

#include "corockpt/ckpt/detail/directory_commit.hpp"
#include "corockpt/ckpt/detail/rank0_exchange.hpp"
#include "corockpt/ckpt/save_steps.hpp"
#include "corockpt/ckpt/snapshot.hpp"

namespace corockpt {

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

SaveScope save_scope(const Model& model) {
  return {.world = model.world(),
          .rank = model.rank(),
          .world_size = model.world_size(),
          .meshes = model.spec().meshes,
          .param_groups = param_groups_json(model.spec())};
}

struct SavePlanCache {
  std::optional<std::uint64_t> sent;  // this rank's layout digest at its last committed save
  detail::PlanCache coordinator;      // rank 0's
};

std::shared_ptr<SavePlanCache> make_save_plan_cache() { return std::make_shared<SavePlanCache>(); }

Task<SaveReport> save_chunks(const Model& model, std::span<const LocalChunk> chunks, CheckpointIo io, std::string dir,
                             SaveOptions options) {
  const SaveScope scope = save_scope(model);
  co_return co_await save_chunks(scope, chunks, io, std::move(dir), std::move(options));
}

Task<SaveReport> save_chunks(const SaveScope& scope, std::span<const LocalChunk> chunks, CheckpointIo io,
                             std::string dir, SaveOptions options) {
  Communicator& world = *scope.world;
  const int rank = scope.rank;
  dir = detail::strip_trailing_slashes(std::move(dir));

  Result<std::string> prepared = std::string{};
  std::optional<TemporaryDirectory> begun;  // rank 0's, held (locked) until this save is over
  if (rank == 0) {
    // Rank 0's blob is the one saved; refused before anything is written.
    if (auto bounded = check_user_blob(options.user); !bounded) {
      prepared = fail(bounded.error().with_path(dir).with_operation("save"));
    } else {
      auto made = co_await begin_save(io, dir);
      if (made) {
        prepared = made->path;
        begun = std::move(*made);
      } else {
        prepared = fail(made.error());
      }
    }
  }
  auto tmp = co_await detail::broadcast_outcome(world, prepared);
  if (!tmp) co_return fail(tmp.error().with_rank(rank).with_operation("save"));

  auto plan = co_await write_rank_data(io, *tmp, rank, chunks, options);
  if (options.on_data_written) options.on_data_written();
  SaveReport report{.dir = dir};
  if (plan) {
    report.rank_bytes = plan->bytes;
    report.rank_files = plan->files;
  }
  // Named, not temporaries in the co_await calls: GCC 12 destroys those twice.
  std::string my_plan = plan_text(plan);
  SavePlanCache* cache = options.plan_cache.get();
  if (plan && cache && cache->sent == plan->layout_digest) my_plan = detail::cached_plan(plan->plan);
  bool plan_posted = false;
  auto plans = co_await detail::gather_texts(world, my_plan, &plan_posted);
  Result<std::string> committed = std::string{};
  if (rank == 0) {
    if (plans) {
      CheckpointMetadata base;
      base.world_size = scope.world_size;
      base.meshes = scope.meshes;
      base.block_size = options.checksum_block;
      base.param_groups = scope.param_groups;
      base.user = options.user;
      auto total = co_await commit_save(io, *plans, std::move(base), *tmp, dir, cache ? &cache->coordinator : nullptr);
      if (total) {
        committed = std::to_string(*total);
      } else {
        committed = fail(total.error());
      }
    } else {
      committed = fail(plans.error());
    }
    if (!committed) (void)co_await abandon_save(io, *tmp);
  }
  auto total = co_await detail::broadcast_outcome(world, committed);
  // A cached plan next time only after a commit that merged this one: after any doubt,
  // the whole plan again.
  if (cache) cache->sent = total && plan ? std::optional(plan->layout_digest) : std::nullopt;
  if (!plan) co_return fail(plan.error().with_rank(rank));  // this rank's own failure first
  // Then a failed exchange of the plans, as seen here (the broadcast after it fails only
  // because the communicator broke, which would hide the cause). Rank 0 then abandoned the
  // save; a rank that never posted its plan knows rank 0 cannot have committed without it.
  if (!plans && rank == 0) {
    plans.error().message += "; the plans did not all reach rank 0, nothing was committed";
    co_return fail(plans.error().with_rank(rank));
  }
  if (!plans) {
    if (plan_posted) {
      plans.error().message += " (the save's outcome is unknown here: rank 0 may have received this rank's plan and "
                               "committed " + dir + "; `corockpt verify` tells)";
    } else {
      plans.error().message += "; this rank's plan was never sent, so rank 0 committed nothing";
    }
    co_return fail(plans.error().with_rank(rank));
  }
  // A peer that dies after rank 0 committed fails the broadcast of the outcome, not the
  // checkpoint: rank 0 knows it is complete, the others cannot know.
  if (!total && rank == 0 && committed) total = std::move(committed);
  if (!total && (total.error().code == Errc::timeout || total.error().code == Errc::unavailable)) {
    total.error().message += " (the save's outcome is unknown here: rank 0 may have committed " + dir +
                             "; `corockpt verify` tells)";
  }
  if (!total) co_return fail(total.error().with_rank(rank));
  report.total_bytes = std::stoull(*total);
  if (begun) report.leftovers = std::move(begun->leftovers);
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
