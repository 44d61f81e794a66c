#include "corockpt/ckpt/save_steps.hpp"

#include <cstdio>
#include <functional>
#include <memory>
#include <set>
#include <vector>

#include "corockpt/ckpt/data_file_layout.hpp"
#include "corockpt/ckpt/data_file_writer.hpp"
#include "corockpt/ckpt/detail/directory_commit.hpp"
#include "corockpt/ckpt/detail/rank_plan.hpp"
#include "corockpt/ckpt/detail/unit_staging.hpp"
#include "corockpt/ckpt/format/chunk_index.hpp"
#include "corockpt/ckpt/format/crc32c.hpp"
#include "corockpt/runtime/when_all.hpp"

namespace corockpt {

namespace {

/// The checksums of each `block` bytes of `bytes` (the last block may be short).
std::vector<std::uint32_t> block_checksums(std::span<const std::byte> bytes, std::uint64_t block) {
  std::vector<std::uint32_t> sums;
  for (std::uint64_t at = 0; at < bytes.size(); at += block) {
    sums.push_back(crc32c(bytes.subspan(at, std::min<std::uint64_t>(block, bytes.size() - at))));
  }
  return sums;
}

/// This rank's objects, one after the other, in objects_file_name(rank), made durable.
Task<detail::RankObjects> write_objects(CheckpointIo io, const std::string& tmp, int rank,
                                        std::span<const LocalObject> objects, std::span<const LocalChunk> chunks,
                                        std::uint64_t block) {
  detail::RankObjects out;
  if (objects.empty()) co_return out;
  out.file = objects_file_name(rank);
  std::set<std::string_view> tensors;
  for (const LocalChunk& chunk : chunks) tensors.insert(chunk.name);
  std::string content;
  for (const LocalObject& object : objects) {
    if (tensors.contains(object.name) || out.objects.contains(object.name)) {
      co_return fail(Errc::invalid_argument, "save: " + object.name + " is given twice on rank " + std::to_string(rank),
                     {.fqn = object.name, .operation = "save"});
    }
    const std::uint64_t begin = content.size();
    content.append(reinterpret_cast<const char*>(object.bytes.data()), object.bytes.size());
    out.objects[object.name] = {out.file, begin, content.size(), block_checksums(object.bytes, block)};
  }
  out.file_size = content.size();
  if (auto ok = co_await detail::write_durable_file(io, tmp + "/" + out.file, std::move(content)); !ok) {
    co_return fail(ok.error());
  }
  co_return out;
}

}  // namespace

std::string objects_file_name(int rank) {
  char name[64];
  std::snprintf(name, sizeof name, "rank%05d-objects.bin", rank);
  return name;
}

Task<TemporaryDirectory> begin_save(CheckpointIo io, std::string dir) {
  co_return co_await detail::make_temporary_directory(io, detail::strip_trailing_slashes(std::move(dir)));
}

Task<RankData> write_rank_data(CheckpointIo io, std::string tmp, int rank, std::span<const LocalChunk> chunks,
                               const SaveOptions& options) {
  const bool streamed = options.file_images.empty();
  // Streamed, the files hold their chunks in the unit order (file images have their own layout).
  std::span<const std::uint32_t> unit_order;
  if (streamed) unit_order = options.unit_order;
  const std::vector<DataFileLayout> layout = layout_data_files(chunks, rank, unit_order);
  if (!streamed && options.file_images.size() != layout.size()) {
    co_return fail(Errc::internal, "save: " + std::to_string(options.file_images.size()) + " file images for " +
                                       std::to_string(layout.size()) + " data files");
  }
  std::vector<DataFileContent> files(layout.size());
  std::uint64_t total = 0;
  for (std::size_t k = 0; k < layout.size(); ++k) {
    files[k].header = layout[k].header;
    for (std::size_t i : layout[k].chunks) files[k].chunks.push_back(&chunks[i]);
    if (!streamed) files[k].image = options.file_images[k];
    files[k].device = options.device.get();
    total += layout[k].size;
  }
  auto done = std::make_shared<std::uint64_t>(0);
  std::function<void(std::uint64_t)> on_written;
  if (options.progress) {
    on_written = [done, total, report = options.progress](std::uint64_t bytes) { report(*done += bytes, total); };
  }
  // Units whose bytes are all staged, as each file's staged prefix grows.
  std::shared_ptr<detail::UnitStaging> units;
  if (streamed && options.on_unit_staged) {
    units = std::make_shared<detail::UnitStaging>(chunks, layout);
    for (std::uint32_t unit : units->without_bytes()) options.on_unit_staged(unit);
  }
  std::vector<Task<std::vector<WrittenChunk>>> writes;
  for (std::size_t k = 0; k < files.size(); ++k) {
    std::function<void(std::uint64_t)> on_staged;
    if (units) {
      on_staged = [units, k, report = options.on_unit_staged](std::uint64_t end) {
        for (std::uint32_t unit : units->staged(k, end)) report(unit);
      };
    }
    writes.push_back(write_data_file(io, tmp + "/" + layout[k].name, files[k], options.checksum_block, on_written,
                                     std::move(on_staged)));
  }
  auto written = all_ok(co_await when_all(std::move(writes)));
  if (!written) co_return fail(written.error());
  auto objects = co_await write_objects(io, tmp, rank, options.objects, chunks, options.checksum_block);
  if (!objects) co_return fail(objects.error());
  detail::RankPlan plan = detail::rank_plan(chunks, rank, detail::save_id_of(tmp), layout, std::move(*written),
                                            std::move(*objects));
  RankData data{.plan = std::move(plan.plan), .layout_digest = plan.layout_digest, .files = plan.index.files.size()};
  for (const auto& file : plan.index.files) data.bytes += file.size;
  // The index of what this rank wrote lies beside its files, durable before the plan
  // says it is there.
  if (auto ok = co_await detail::write_durable_file(io, tmp + "/" + rank_index_file_name(rank),
                                                    encode_rank_index(std::move(plan.index)));
      !ok) {
    co_return fail(ok.error());
  }
  co_return data;
}

std::string plan_text(const Result<RankData>& data) { return data ? data->plan : "!" + data.error().to_string(); }

Task<std::uint64_t> commit_save(CheckpointIo io, std::span<const std::string> plans, CheckpointMetadata base,
                                std::string tmp, std::string dir, detail::PlanCache* cache) {
  dir = detail::strip_trailing_slashes(std::move(dir));
  if (auto bounded = check_user_blob(base.user); !bounded) co_return fail(bounded.error().with_path(dir));
  auto planned = detail::plan_commit(plans, base.world_size, base.param_groups.dump(), cache);
  if (!planned) co_return fail(planned.error().with_path(dir));
  CheckpointMetadata header = std::move(base);
  header.files = planned->object_files;
  header.objects = planned->objects;
  header.index = IndexRecord{std::string(tensor_index_file), planned->index.size(),
                             crc32c(std::as_bytes(std::span(planned->index))), detail::save_id_of(tmp)};
  // The index first: the header, written last, is what makes the directory a checkpoint.
  if (auto ok = co_await detail::write_durable_file(io, tmp + "/" + std::string(tensor_index_file), planned->index);
      !ok) {
    co_return fail(ok.error());
  }
  if (auto ok = co_await detail::write_durable_file(io, tmp + "/" + std::string(checkpoint_metadata_file),
                                                    to_json_text(header));
      !ok) {
    co_return fail(ok.error());
  }
  if (auto ok = co_await detail::commit_directory(io, tmp, dir); !ok) co_return fail(ok.error());
  if (cache) detail::remember(*cache, *planned);
  co_return planned->data_bytes;
}

Task<void> abandon_save(CheckpointIo io, std::string tmp) {
  co_return co_await detail::remove_directory(io, std::move(tmp));
}

}  // namespace corockpt
