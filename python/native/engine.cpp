#include "engine.hpp"

#include <span>

#include <nlohmann/json.hpp>

#include "corockpt/ckpt/checkpoint_directory.hpp"
#include "corockpt/ckpt/checkpoint_reader.hpp"
#include "corockpt/ckpt/load.hpp"
#include "corockpt/ckpt/save_steps.hpp"
#include "corockpt/plugins/storage/make_storage.hpp"

namespace corockpt::python {

namespace {

constexpr std::uint64_t staging_buffer_bytes = 8 << 20;

/// Runs `task` on the engine's runtime and waits for it.
template <class T>
Result<T> run(Runtime& runtime, Task<T> task) {
  return runtime.spawn(std::move(task)).get();
}

}  // namespace

Result<std::vector<LocalChunk>> to_local_chunks(const std::vector<ChunkSpec>& specs) {
  std::vector<LocalChunk> chunks;
  chunks.reserve(specs.size());
  for (const ChunkSpec& spec : specs) {
    auto dtype = parse_dtype(spec.dtype);
    if (!dtype) return fail(Errc::invalid_argument, spec.name + ": unsupported dtype " + spec.dtype + " (" +
                                                        dtype.error().message + ")", {.fqn = spec.name});
    Box box{spec.offsets, spec.sizes};
    if (box.offsets.size() != spec.shape.size() || box.sizes.size() != spec.shape.size()) {
      return fail(Errc::invalid_argument, spec.name + ": box " + box.to_string() + " does not match the tensor's " +
                                              std::to_string(spec.shape.size()) + " dims", {.fqn = spec.name});
    }
    std::uint64_t elements = 1;
    for (std::int64_t s : box.sizes) elements *= static_cast<std::uint64_t>(s);
    if (elements * size_of(*dtype) != spec.bytes) {
      return fail(Errc::invalid_argument, spec.name + ": " + std::to_string(spec.bytes) + " bytes for box " +
                                              box.to_string() + " of " + spec.dtype, {.fqn = spec.name});
    }
    chunks.push_back(LocalChunk{.name = spec.name,
                                .dtype = *dtype,
                                .shape = spec.shape,
                                .box = std::move(box),
                                .bytes = std::span(reinterpret_cast<std::byte*>(spec.address), spec.bytes),
                                .space = spec.on_cuda ? MemorySpace::cuda : MemorySpace::host,
                                .writer = true,
                                .unit = spec.unit});
  }
  return chunks;
}

Result<std::unique_ptr<Engine>> Engine::create(std::uint64_t staging_bytes) {
  std::unique_ptr<Engine> engine(new Engine());
  engine->runtime_ = std::make_unique<Runtime>();
  auto storage = make_storage(*engine->runtime_, StorageKind::automatic);
  if (!storage) return fail(storage.error());
  engine->storage_ = std::move(*storage);
  const std::size_t buffers = std::max<std::uint64_t>(2, staging_bytes / staging_buffer_bytes);
  auto pool =
      BufferPool::create({.buffer_bytes = staging_buffer_bytes, .buffer_count = buffers}, make_host_allocator());
  if (!pool) return fail(pool.error());
  engine->staging_ = std::move(*pool);
  return engine;
}

Engine::~Engine() = default;

Result<std::string> Engine::begin_save(const std::string& dir) {
  auto begun = run(*runtime_, corockpt::begin_save(io(), dir));
  if (!begun) return fail(begun.error());
  std::string path = begun->path;
  std::lock_guard guard(saves_mutex_);
  live_saves_.insert_or_assign(path, std::move(*begun));
  return path;
}

Result<std::string> Engine::write_rank_data(const std::string& tmp, int rank, const std::vector<ChunkSpec>& chunks,
                                            const std::vector<ObjectSpec>& objects, std::uint64_t checksum_block) {
  auto local = to_local_chunks(chunks);
  if (!local) return fail(local.error().with_rank(rank));
  std::vector<LocalObject> held;
  for (const ObjectSpec& object : objects) held.push_back({object.name, std::as_bytes(std::span(object.bytes))});
  SaveOptions options;
  options.checksum_block = checksum_block;
  options.objects = std::move(held);
  auto written = run(*runtime_, corockpt::write_rank_data(io(), tmp, rank, *local, options));
  if (!written) return fail(written.error().with_rank(rank));
  return std::move(written->plan);
}

Result<std::uint64_t> Engine::commit_save(const std::vector<std::string>& plans, int world_size,
                                          const std::string& user_json, std::uint64_t checksum_block,
                                          const std::string& tmp, const std::string& dir) {
  CheckpointMetadata base;
  base.world_size = world_size;
  base.block_size = checksum_block;
  base.user = nlohmann::json::parse(user_json, nullptr, /*allow_exceptions=*/false);
  if (!base.user.is_object()) return fail(Errc::invalid_argument, "save: the user blob must be a JSON object");
  auto committed = run(*runtime_, corockpt::commit_save(io(), plans, std::move(base), tmp, dir));
  if (committed) {
    std::lock_guard guard(saves_mutex_);
    live_saves_.erase(tmp);  // renamed: its lock is released
  }
  return committed;
}

Result<void> Engine::abandon_save(const std::string& tmp) {
  auto removed = run(*runtime_, corockpt::abandon_save(io(), tmp));
  std::lock_guard guard(saves_mutex_);
  live_saves_.erase(tmp);
  return removed;
}

Result<std::unique_ptr<Reader>> Engine::open(const std::string& dir) {
  auto reader = run(*runtime_, CheckpointReader::open(io(), dir));
  if (!reader) return fail(reader.error());
  return std::make_unique<Reader>(*this, std::move(*reader));
}

Result<std::string> Engine::latest(const std::string& root) {
  auto found = run(*runtime_, latest_checkpoint(io(), root));
  if (!found) return fail(found.error());
  return *found ? (*found)->path : std::string();
}

Reader::~Reader() = default;

std::string Reader::metadata_json() const { return to_json_text(reader_->metadata()); }

Result<std::vector<std::string>> Reader::load(const std::vector<ChunkSpec>& chunks, bool strict) {
  auto local = to_local_chunks(chunks);
  if (!local) return fail(local.error());
  LoadOptions options;
  options.strict = strict;
  auto report = run(engine_.runtime(), load_from(*reader_, *local, engine_.io(), std::move(options)));
  if (!report) return fail(report.error());
  return report->missing;
}

Result<std::vector<std::string>> Reader::read_objects(const std::vector<std::string>& names) {
  auto reading = [](CheckpointReader& reader, std::vector<std::string> names) -> Task<std::vector<std::string>> {
    std::vector<std::string> values;
    for (const std::string& name : names) {
      auto bytes = co_await reader.read_object(name);
      if (!bytes) co_return fail(bytes.error());
      values.emplace_back(reinterpret_cast<const char*>(bytes->data()), bytes->size());
    }
    co_return values;
  };
  return run(engine_.runtime(), reading(*reader_, names));
}

}  // namespace corockpt::python
