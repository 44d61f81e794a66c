#include "corockpt/ckpt/save_steps.hpp"

#include <cstdio>
#include <functional>
#include <memory>
#include <vector>

#include "corockpt/ckpt/data_file_layout.hpp"
#include "corockpt/ckpt/data_file_writer.hpp"
#include "corockpt/ckpt/detail/directory_commit.hpp"
#include "corockpt/ckpt/detail/rank_plan.hpp"
#include "corockpt/ckpt/detail/unit_staging.hpp"
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
Task<void> write_objects(CheckpointIo io, const std::string& tmp, int rank, std::span<const LocalObject> objects,
                         std::uint64_t block, CheckpointMetadata& plan) {
  if (objects.empty()) co_return Result<void>{};
  const std::string name = objects_file_name(rank);
  std::string content;
  for (const LocalObject& object : objects) {
    if (plan.tensors.contains(object.name) || plan.objects.contains(object.name)) {
      co_return fail(Errc::invalid_argument, "save: " + object.name + " is given twice on rank " + std::to_string(rank),
                     {.fqn = object.name, .operation = "save"});
    }
    const std::uint64_t begin = content.size();
    content.append(reinterpret_cast<const char*>(object.bytes.data()), object.bytes.size());
    plan.objects[object.name] = {name, begin, content.size(), block_checksums(object.bytes, block)};
  }
  plan.files[name] = content.size();
  co_return co_await detail::write_durable_file(io, tmp + "/" + name, std::move(content));
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

Task<CheckpointMetadata> write_rank_data(CheckpointIo io, std::string tmp, int rank, int world_size,
                                         std::span<const LocalChunk> chunks, const SaveOptions& options) {
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
  CheckpointMetadata plan =
      detail::rank_plan(chunks, world_size, options.checksum_block, layout, std::move(*written));
  if (auto ok = co_await write_objects(io, tmp, rank, options.objects, options.checksum_block, plan); !ok) {
    co_return fail(ok.error());
  }
  co_return plan;
}

std::string plan_text(const Result<CheckpointMetadata>& plan) {
  return plan ? to_json_text(*plan) : "!" + plan.error().to_string();
}

Task<std::uint64_t> commit_save(CheckpointIo io, std::span<const std::string> plans, CheckpointMetadata base,
                                std::string tmp, std::string dir) {
  dir = detail::strip_trailing_slashes(std::move(dir));
  if (auto bounded = check_user_blob(base.user); !bounded) co_return fail(bounded.error().with_path(dir));
  auto merged = detail::merge_plans(plans, std::move(base));
  if (!merged) co_return fail(merged.error().with_path(dir));
  if (auto ok = co_await detail::write_durable_file(io, tmp + "/" + std::string(checkpoint_metadata_file),
                                                    to_json_text(*merged));
      !ok) {
    co_return fail(ok.error());
  }
  if (auto ok = co_await detail::commit_directory(io, tmp, dir); !ok) co_return fail(ok.error());
  std::uint64_t total = 0;
  for (const auto& [file, size] : merged->files) total += size;
  co_return total;
}

Task<void> abandon_save(CheckpointIo io, std::string tmp) {
  co_return co_await detail::remove_directory(io, std::move(tmp));
}

}  // namespace corockpt
