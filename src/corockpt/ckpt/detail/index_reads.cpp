#include "corockpt/ckpt/detail/index_reads.hpp"

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "corockpt/ckpt/detail/parallel_parts.hpp"
#include "corockpt/ckpt/format/checked_size.hpp"
#include "corockpt/ckpt/format/chunk_index.hpp"
#include "corockpt/ckpt/format/crc32c.hpp"
#include "corockpt/runtime/when_all.hpp"

namespace corockpt::detail {

namespace {

// The largest index file read (4 GiB): far past any real checkpoint's (the tensor index
// of a trillion-parameter MoE is tens of MiB); a larger one is not ours.
constexpr std::uint64_t max_index_bytes = 4ull << 30;

Error corrupt(const std::string& path, const std::string& what, const std::string& tensor = {}) {
  Error e{Errc::corrupt, "index: " + what, {}, 0};
  e.with_path(path).with_operation("read index");
  if (!tensor.empty()) e.with_fqn(tensor);
  return e;
}

// The tensor index, mapped where the storage can (every loading rank reads all of it,
// tens of MiB for a trillion parameters, and copying it out of the page cache into fresh
// memory costs ten times the map: 27-48 ms against 3 for 35 MiB), else read.
Task<TensorIndex> read_tensor_index(CheckpointIo io, const std::string& dir, const CheckpointMetadata& header) {
  const IndexRecord& record = *header.index;
  const std::string path = dir + "/" + record.file;
  auto mapped = co_await io.storage->map_file(path);
  if (!mapped && mapped.error().code == Errc::unavailable) {
    auto bytes = co_await read_whole_file(io, path, max_index_bytes, "the tensor index", record.size);
    if (!bytes) co_return fail(bytes.error());
    auto owner = std::make_shared<std::string>(std::move(*bytes));
    mapped = MappedBytes{*owner, owner};
  }
  if (!mapped) co_return fail(mapped.error());
  if (mapped->bytes.size() != record.size) {
    co_return fail(corrupt(path, "the file is " + std::to_string(mapped->bytes.size()) + " bytes, but the metadata says " +
                                     std::to_string(record.size)));
  }
  if (crc32c(std::as_bytes(std::span(mapped->bytes.data(), mapped->bytes.size()))) != record.crc32c) {
    co_return fail(corrupt(path, "checksum mismatch: the tensor index is damaged"));
  }
  co_return TensorIndex::open(mapped->bytes, std::move(mapped->owner), header.world_size, header.block_size, path);
}

Task<RankIndexView> read_rank_index(CheckpointIo io, std::string dir, int rank, std::string save_id,
                                    std::uint64_t block_size) {
  std::string path = dir + "/" + rank_index_file_name(rank);
  auto bytes = co_await read_whole_file(io, path, max_index_bytes, "a rank index");
  if (!bytes) co_return fail(bytes.error());
  co_return RankIndexView::open(std::move(*bytes), rank, save_id, block_size, std::move(path));
}

// The rank indexes of `ranks`, read at once, in order.
Task<std::vector<RankIndexView>> read_rank_indexes(CheckpointIo io, const std::string& dir,
                                                   const CheckpointMetadata& header, const std::vector<int>& ranks) {
  std::vector<RankIndexView> out;
  // A batch at a time: thousands of files must not all be open (and in memory twice) at once.
  constexpr std::size_t batch = 64;
  for (std::size_t from = 0; from < ranks.size(); from += batch) {
    std::vector<Task<RankIndexView>> reads;
    for (std::size_t i = from; i < std::min(ranks.size(), from + batch); ++i) {
      reads.push_back(read_rank_index(io, dir, ranks[i], header.index->save_id, header.block_size));
    }
    auto read = all_ok(co_await when_all(std::move(reads)));
    if (!read) co_return fail(read.error());
    for (auto& index : *read) out.push_back(std::move(index));
  }
  co_return out;
}

// Saved chunk `box` of `tensor` (whose name hash is `hash`), written by `index`'s rank,
// as the metadata records it: its length checked against the box. Its file marked in
// `used_files` (by the index's file order) when given.
Result<ChunkRecord> saved_chunk(const RankIndexView& index, const TensorEntry& tensor, std::uint64_t hash, Box box,
                                const std::string& dir, std::vector<bool>* used_files = nullptr) {
  auto found = index.find(hash, box);
  if (!found) return fail(found.error());
  if (!*found) {
    return fail(corrupt(dir + "/" + rank_index_file_name(index.rank()),
                        "the tensor index says rank " + std::to_string(index.rank()) + " wrote chunk " + box.to_string() +
                            " of " + tensor.name + ", but its index does not list it",
                        tensor.name));
  }
  RankIndex::Chunk& chunk = **found;
  const auto bytes = checked_bytes(box.sizes, tensor.dtype);
  if (!bytes || *bytes != chunk.end - chunk.begin) {
    return fail(corrupt(dir + "/" + rank_index_file_name(index.rank()),
                        "chunk " + box.to_string() + " of " + tensor.name + " holds " +
                            std::to_string(chunk.end - chunk.begin) + " bytes, not its box's",
                        tensor.name));
  }
  if (used_files) (*used_files)[chunk.file] = true;
  return ChunkRecord{std::move(box), index.files()[chunk.file].name, chunk.begin, chunk.end, std::move(chunk.crc32c)};
}

Result<void> add_files(const RankIndexView& index, CheckpointMetadata& metadata, const std::string& dir) {
  for (const auto& file : index.files()) {
    auto [it, fresh] = metadata.files.try_emplace(file.name, file.size);
    if (!fresh && it->second != file.size) {
      return fail(corrupt(dir + "/" + rank_index_file_name(index.rank()),
                          "file \"" + file.name + "\" is listed twice with different sizes"));
    }
  }
  return {};
}

// The chunk of a tensor saved whole, from the tensor index.
ChunkRecord whole_chunk(const TensorEntry& tensor) {
  const WholeChunk& whole = *tensor.whole;
  return ChunkRecord{Box{std::vector<std::int64_t>(tensor.shape.size(), 0), tensor.shape}, whole.file, whole.begin,
                     whole.end, whole.crc32c};
}

}  // namespace

Task<std::string> read_whole_file(CheckpointIo io, std::string path, std::uint64_t max_bytes, std::string what,
                                  std::uint64_t expected) {
  auto file = co_await io.storage->open(path, {.mode = OpenMode::read, .direct = DirectIo::never, .regular_only = true});
  if (!file) co_return fail(file.error());
  std::string text;
  // The expected size and one byte more in one read (a longer file shows as one byte
  // more); then, or without one, 1 MiB at a time, the buffer growing geometrically.
  std::size_t piece = expected > 0 && expected < max_bytes ? expected + 1 : 1 << 20;
  while (true) {
    const std::size_t at = text.size();
    text.resize(at + piece);
    auto got = co_await io.storage->read_at(*file, at, std::as_writable_bytes(std::span(text)).subspan(at, piece));
    if (!got) co_return fail(got.error());
    text.resize(at + *got);
    if (*got < piece) break;
    if (text.size() > max_bytes) {
      co_return fail(Errc::corrupt, what + " is larger than " + std::to_string(max_bytes >> 20) + " MiB, the most a checkpoint's may be",
                     {.path = path, .operation = "read"});
    }
    piece = 1 << 20;
  }
  co_return text;
}

Task<CheckpointMetadata> read_all_indexes(CheckpointIo io, std::string dir, CheckpointMetadata header) {
  auto tensors = co_await read_tensor_index(io, dir, header);
  if (!tensors) co_return fail(tensors.error());
  std::vector<int> ranks(static_cast<std::size_t>(header.world_size));
  for (std::size_t r = 0; r < ranks.size(); ++r) ranks[r] = static_cast<int>(r);
  auto indexes = co_await read_rank_indexes(io, dir, header, ranks);
  if (!indexes) co_return fail(indexes.error());
  CheckpointMetadata metadata = std::move(header);
  for (const RankIndexView& index : *indexes) {
    if (auto ok = add_files(index, metadata, dir); !ok) co_return fail(ok.error());
  }
  metadata.param_groups = nlohmann::json::parse(tensors->param_groups_json(), nullptr, /*allow_exceptions=*/false);
  if (!metadata.param_groups.is_array()) {
    co_return fail(corrupt(dir + "/" + metadata.index->file, "its param groups are not a JSON list"));
  }
  for (std::size_t i = 0; i < tensors->size(); ++i) {
    auto tensor = tensors->entry(i);
    if (!tensor) co_return fail(tensor.error());
    TensorRecord& record = metadata.tensors[tensor->name];
    record.dtype = tensor->dtype;
    record.shape = tensor->shape;
    if (tensor->whole) {
      record.chunks.push_back(whole_chunk(*tensor));
      continue;
    }
    const std::uint64_t hash = name_hash(tensor->name);
    for (const ChunkRun& run : tensor->runs) {
      for (std::int64_t j = 0; j < run.count; ++j) {
        auto chunk = saved_chunk((*indexes)[static_cast<std::size_t>(cell_owner(run, j))], *tensor, hash,
                                 cell_box(run, j, tensor->shape), dir);
        if (!chunk) co_return fail(chunk.error());
        record.chunks.push_back(std::move(*chunk));
      }
    }
  }
  metadata.index.reset();  // now the version 1/2 view: every tensor is here
  co_return metadata;
}

Task<CheckpointMetadata> read_indexes_for(CheckpointIo io, std::string dir, CheckpointMetadata header,
                                          std::span<const LocalChunk> targets) {
  auto tensors = co_await read_tensor_index(io, dir, header);
  if (!tensors) co_return fail(tensors.error());
  CheckpointMetadata metadata = std::move(header);
  // The targets in name hash order, the tensor index's: its table, names and bodies are
  // then read front to back, not at thousands of random places.
  struct Target {
    std::uint64_t hash;
    std::size_t index;
  };
  std::vector<Target> order(targets.size());
  for (std::size_t t = 0; t < targets.size(); ++t) order[t] = {name_hash(targets[t].name), t};
  std::ranges::sort(order, [](const Target& a, const Target& b) { return std::tie(a.hash, a.index) < std::tie(b.hash, b.index); });
  // Each tensor the targets name once: decoded and its tiling checked, on every core (a
  // load rank holds thousands), in parts of `order` that keep a hash's targets together;
  // then its record made, in order.
  struct Found {
    TensorEntry entry;
    std::uint64_t hash = 0;
    TensorRecord* record = nullptr;
  };
  std::vector<Found*> target_tensor(targets.size(), nullptr);  // null: not in the checkpoint
  const std::size_t parts = parts_for(order.size(), 2048);
  std::vector<std::size_t> bounds(parts + 1, order.size());
  bounds[0] = 0;
  for (std::size_t p = 1; p < parts; ++p) {
    bounds[p] = std::max(order.size() * p / parts, bounds[p - 1]);
    while (bounds[p] > 0 && bounds[p] < order.size() && order[bounds[p]].hash == order[bounds[p] - 1].hash) ++bounds[p];
  }
  std::vector<std::deque<Found>> found(parts);  // deques: stable addresses
  std::vector<Result<void>> decoded(parts);
  run_parts(parts, [&](std::size_t p) {
    for (std::size_t k = bounds[p]; k < bounds[p + 1]; ++k) {
      const LocalChunk& target = targets[order[k].index];
      Found* last = found[p].empty() ? nullptr : &found[p].back();
      if (last && last->hash == order[k].hash && last->entry.name == target.name) {
        target_tensor[order[k].index] = last;
        continue;
      }
      const auto at = tensors->find(target.name, order[k].hash);
      if (!at) continue;  // find_read_needs reports it missing
      auto tensor = tensors->entry(*at);
      if (!tensor) {
        decoded[p] = fail(tensor.error());
        return;
      }
      if (auto ok = check_tiling(*tensor); !ok) {
        decoded[p] = fail(ok.error().with_path(dir));
        return;
      }
      target_tensor[order[k].index] = &found[p].emplace_back(Found{std::move(*tensor), order[k].hash, nullptr});
    }
  });
  for (std::size_t p = 0; p < parts; ++p) {
    if (!decoded[p]) co_return fail(decoded[p].error());
    for (Found& f : found[p]) {
      f.record = &metadata.tensors[f.entry.name];
      f.record->dtype = f.entry.dtype;
      f.record->shape = f.entry.shape;
    }
  }
  // The saved cells the targets overlap, each once, grouped by the rank that wrote them.
  struct Cell {
    int owner;
    std::uint64_t hash;
    std::size_t run;
    std::int64_t j;
    Found* tensor;
  };
  auto key = [](const Cell& c) { return std::tie(c.owner, c.hash, c.run, c.j); };
  std::vector<Cell> cells;
  for (std::size_t t = 0; t < targets.size(); ++t) {
    const LocalChunk& target = targets[t];
    Found* tensor = target_tensor[t];
    if (!tensor || tensor->entry.shape != target.shape || target.box.empty()) continue;
    const TensorEntry& entry = tensor->entry;
    if (entry.whole) {  // its location is in the tensor index
      if (tensor->record->chunks.empty()) {
        tensor->record->chunks.push_back(whole_chunk(entry));
        metadata.files[entry.whole->file] = entry.whole->file_size;
      }
      continue;
    }
    for (std::size_t k = 0; k < entry.runs.size(); ++k) {
      const ChunkRun& run = entry.runs[k];
      const auto [first, last] = cells_along(run, target.box);
      for (std::int64_t j = first; j < last; ++j) cells.push_back({cell_owner(run, j), tensor->hash, k, j, tensor});
    }
  }
  std::ranges::sort(cells, [&key](const Cell& a, const Cell& b) { return key(a) < key(b); });
  cells.erase(std::unique(cells.begin(), cells.end(), [&key](const Cell& a, const Cell& b) { return key(a) == key(b); }),
              cells.end());
  std::vector<int> ranks;
  for (const Cell& cell : cells) {
    if (ranks.empty() || ranks.back() != cell.owner) ranks.push_back(cell.owner);
  }
  auto indexes = co_await read_rank_indexes(io, dir, metadata, ranks);
  if (!indexes) co_return fail(indexes.error());

  // Each index's chunks looked up and decoded on every core, then added in rank order.
  struct Saved {
    Result<void> outcome;
    std::vector<std::pair<TensorRecord*, ChunkRecord>> chunks;
    std::vector<bool> used_files;
  };
  std::vector<Saved> saved(indexes->size());
  std::vector<std::size_t> first_cell(indexes->size() + 1, cells.size());  // into cells, in the ranks' order
  for (std::size_t i = 0, at = 0; i < indexes->size(); ++i) {
    first_cell[i] = at;
    while (at < cells.size() && cells[at].owner == (*indexes)[i].rank()) ++at;
  }
  const std::size_t index_parts = parts_for(cells.size(), 2048);
  run_parts(index_parts, [&](std::size_t p) {
    for (std::size_t i = p; i < indexes->size(); i += index_parts) {
      const RankIndexView& index = (*indexes)[i];
      Saved& out = saved[i];
      out.used_files.assign(index.files().size(), false);
      for (std::size_t at = first_cell[i]; at < first_cell[i + 1]; ++at) {
        const Cell& cell = cells[at];
        const TensorEntry& entry = cell.tensor->entry;
        auto chunk = saved_chunk(index, entry, cell.hash, cell_box(entry.runs[cell.run], cell.j, entry.shape), dir,
                                 &out.used_files);
        if (!chunk) {
          out.outcome = fail(chunk.error());
          break;
        }
        out.chunks.emplace_back(cell.tensor->record, std::move(*chunk));
      }
    }
  });
  for (std::size_t i = 0; i < saved.size(); ++i) {
    if (!saved[i].outcome) co_return fail(saved[i].outcome.error());
    for (auto& [record, chunk] : saved[i].chunks) record->chunks.push_back(std::move(chunk));
    const RankIndexView& index = (*indexes)[i];
    for (std::size_t f = 0; f < saved[i].used_files.size(); ++f) {
      if (saved[i].used_files[f]) metadata.files[index.files()[f].name] = index.files()[f].size;
    }
  }
  metadata.index.reset();
  metadata.partial = true;
  co_return metadata;
}

}  // namespace corockpt::detail
