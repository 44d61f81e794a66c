#include "corockpt/ckpt/format/chunk_index.hpp"

#include <algorithm>
#include <cstdio>

#include "corockpt/ckpt/format/binary_codec.hpp"
#include "corockpt/ckpt/format/checked_size.hpp"
#include "corockpt/ckpt/format/checkpoint_metadata.hpp"
#include "corockpt/ckpt/format/crc32c.hpp"

namespace corockpt {

namespace {

constexpr std::string_view kTensorMagic = "CRKTIDX1";
constexpr std::string_view kRankMagic = "CRKRIDX1";
// A tensor's entry in the table: its name hash, where its name and its body (dtype,
// shape, runs) lie. Entries are sorted by name hash: a lookup compares 64-bit numbers,
// not names that share long prefixes.
constexpr std::size_t kEntryBytes = 32;

Error corrupt(const std::string& path, const std::string& what, const std::string& tensor = {}) {
  Error e{Errc::corrupt, "index: " + what, {}, 0};
  e.with_path(path);
  if (!tensor.empty()) e.with_fqn(tensor);
  return e;
}

std::optional<DType> dtype_of_code(std::uint64_t code) {
  if (code > static_cast<std::uint64_t>(DType::boolean)) return std::nullopt;
  return static_cast<DType>(code);
}

bool box_before(const Box& a, const Box& b) { return a.offsets < b.offsets || (a.offsets == b.offsets && a.sizes < b.sizes); }

}  // namespace

void write_whole(detail::ByteWriter& out, const WholeChunk& chunk) {
  out.text(chunk.file);
  out.varint(chunk.file_size);
  out.varint(chunk.begin);
  out.varint(chunk.end);
}

WholeChunk read_whole(detail::ByteReader& in) {
  WholeChunk chunk;
  chunk.file = std::string(in.text());
  chunk.file_size = in.varint();
  chunk.begin = in.varint();
  chunk.end = in.varint();
  return chunk;
}

std::size_t tensor_index_crcs_at(std::string_view bytes) {
  detail::ByteReader in(bytes.substr(std::min(bytes.size(), kTensorMagic.size() + 24), 8));
  return in.fixed<std::uint64_t>();
}

std::size_t tensor_index_groups_at(std::string_view bytes) {
  detail::ByteReader in(bytes.substr(std::min(bytes.size(), kTensorMagic.size() + 32), 8));
  return in.fixed<std::uint64_t>();
}

Result<void> check_tiling(const TensorEntry& tensor) {
  if (covers_in_one_run(tensor.runs, tensor.shape)) return {};
  TensorRecord record{tensor.dtype, tensor.shape, {}};
  for (const ChunkRun& run : tensor.runs) {
    for (std::int64_t j = 0; j < run.count; ++j) record.chunks.push_back({cell_box(run, j, tensor.shape), {}, 0, 0, {}});
  }
  return check_tiling(tensor.name, record);
}

std::uint64_t fnv1a64(std::string_view bytes) {
  std::uint64_t hash = 14695981039346656037ull;
  for (char c : bytes) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 1099511628211ull;
  }
  return hash;
}

std::string rank_index_file_name(int rank) {
  char name[64];
  std::snprintf(name, sizeof name, "rank%05d-index.bin", rank);
  return name;
}

// --- the tensor index ----------------------------------------------------------------

std::string encode_tensor_index(std::span<const TensorEntry> tensors, std::string_view param_groups_json,
                                std::vector<std::int64_t>* whole_ordinals) {
  std::vector<std::pair<std::uint64_t, std::size_t>> order;
  order.reserve(tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) order.emplace_back(name_hash(tensors[i].name), i);
  std::ranges::sort(order, {}, &std::pair<std::uint64_t, std::size_t>::first);
  if (whole_ordinals) whole_ordinals->assign(tensors.size(), -1);
  std::string names;
  detail::ByteWriter bodies;
  detail::ByteWriter table;
  detail::ByteWriter crcs;  // the whole chunks' checksums, one each, in entry order
  for (const auto& [hash, i] : order) {
    const TensorEntry& tensor = tensors[i];
    const std::size_t body_at = bodies.size();
    bodies.fixed<std::uint8_t>(static_cast<std::uint8_t>(tensor.dtype));
    bodies.varint(tensor.shape.size());
    for (std::int64_t s : tensor.shape) bodies.varint(static_cast<std::uint64_t>(s));
    bodies.varint(tensor.runs.size());
    for (const ChunkRun& run : tensor.runs) write_run(bodies, run);
    bodies.fixed<std::uint8_t>(tensor.whole ? 1 : 0);
    if (tensor.whole) {
      const std::size_t ordinal = crcs.size() / sizeof(std::uint32_t);
      write_whole(bodies, *tensor.whole);
      bodies.varint(ordinal);
      crcs.fixed<std::uint32_t>(tensor.whole->crc32c.empty() ? 0 : tensor.whole->crc32c[0]);
      if (whole_ordinals) (*whole_ordinals)[i] = static_cast<std::int64_t>(ordinal);
    }
    table.fixed<std::uint64_t>(hash);
    table.fixed<std::uint64_t>(names.size());
    table.fixed<std::uint32_t>(static_cast<std::uint32_t>(tensor.name.size()));
    table.fixed<std::uint32_t>(static_cast<std::uint32_t>(bodies.size() - body_at));
    table.fixed<std::uint64_t>(body_at);
    names += tensor.name;
  }
  detail::ByteWriter out;
  out.raw(kTensorMagic);
  out.fixed<std::uint64_t>(tensors.size());
  const std::size_t names_at = out.size() + 4 * sizeof(std::uint64_t) + table.size();
  out.fixed<std::uint64_t>(names_at);
  out.fixed<std::uint64_t>(names_at + names.size());                                  // bodies
  out.fixed<std::uint64_t>(names_at + names.size() + bodies.size());                  // checksums
  out.fixed<std::uint64_t>(names_at + names.size() + bodies.size() + crcs.size());    // param groups
  out.raw(table.bytes());
  out.raw(names);
  out.raw(bodies.bytes());
  out.raw(crcs.bytes());
  out.raw(param_groups_json);
  return std::move(out.bytes());
}

Result<TensorIndex> TensorIndex::open(std::string bytes, int world_size, std::uint64_t block_size, std::string path) {
  auto owner = std::make_shared<std::string>(std::move(bytes));
  const std::string_view view(*owner);
  return open(view, std::move(owner), world_size, block_size, std::move(path));
}

Result<TensorIndex> TensorIndex::open(std::string_view bytes, std::shared_ptr<const void> owner, int world_size,
                                      std::uint64_t block_size, std::string path) {
  TensorIndex index;
  detail::ByteReader in(bytes);
  if (in.raw(kTensorMagic.size()) != kTensorMagic) return fail(corrupt(path, "not a corockpt tensor index"));
  const std::uint64_t count = in.fixed<std::uint64_t>();
  const std::uint64_t names_at = in.fixed<std::uint64_t>();
  const std::uint64_t bodies_at = in.fixed<std::uint64_t>();
  const std::uint64_t crcs_at = in.fixed<std::uint64_t>();
  const std::uint64_t extras_at = in.fixed<std::uint64_t>();
  const std::uint64_t table_at = in.at();
  if (in.failed || count > (bytes.size() - table_at) / kEntryBytes || names_at != table_at + count * kEntryBytes ||
      bodies_at < names_at || crcs_at < bodies_at || extras_at < crcs_at || extras_at > bytes.size() ||
      (extras_at - crcs_at) % sizeof(std::uint32_t) != 0) {
    return fail(corrupt(path, "its table does not fit its " + std::to_string(bytes.size()) + " bytes"));
  }
  index.count_ = count;
  index.names_at_ = names_at;
  index.bodies_at_ = bodies_at;
  index.crcs_at_ = crcs_at;
  index.extras_at_ = extras_at;
  index.world_size_ = world_size;
  index.block_size_ = block_size;
  index.path_ = std::move(path);
  index.bytes_ = bytes;
  index.owner_ = std::move(owner);
  // Every name inside its blob, hashes in strictly ascending order: find's binary search
  // relies on it.
  std::uint64_t previous = 0;
  for (std::size_t i = 0; i < count; ++i) {
    detail::ByteReader entry(index.bytes_.substr(table_at + i * kEntryBytes, kEntryBytes));
    const std::uint64_t hash = entry.fixed<std::uint64_t>();
    const std::uint64_t name_at = entry.fixed<std::uint64_t>();
    const std::uint64_t name_len = entry.fixed<std::uint32_t>();
    const std::uint64_t body_len = entry.fixed<std::uint32_t>();
    const std::uint64_t body_at = entry.fixed<std::uint64_t>();
    if (name_at > bodies_at - names_at || name_len > bodies_at - names_at - name_at ||
        body_at > crcs_at - bodies_at || body_len > crcs_at - bodies_at - body_at) {
      return fail(corrupt(index.path_, "entry " + std::to_string(i) + " leaves the file"));
    }
    if (i > 0 && hash <= previous) {
      return fail(corrupt(index.path_, "its name hashes are not in order at entry " + std::to_string(i)));
    }
    previous = hash;
  }
  return index;
}

std::uint64_t TensorIndex::hash(std::size_t i) const {
  detail::ByteReader entry(bytes_.substr(names_at_ - count_ * kEntryBytes + i * kEntryBytes, 8));
  return entry.fixed<std::uint64_t>();
}

std::string_view TensorIndex::name(std::size_t i) const {
  detail::ByteReader entry(bytes_.substr(names_at_ - count_ * kEntryBytes + i * kEntryBytes + 8, 12));
  const std::uint64_t name_at = entry.fixed<std::uint64_t>();
  const std::uint64_t name_len = entry.fixed<std::uint32_t>();
  return bytes_.substr(names_at_ + name_at, name_len);
}

std::optional<std::size_t> TensorIndex::find(std::string_view name, std::uint64_t wanted) const {
  if (count_ == 0) return std::nullopt;
  // Name hashes spread evenly over 64 bits: the entry sits near wanted / 2^64 of the way
  // down the table, a probe or two away, where a binary search would take 18 probes, each
  // a cache miss, for each of a load's thousands of tensors. Gallop from there to a
  // bracket [lo, hi] of the first hash >= wanted, then bisect it.
  const std::size_t guess = count_ < (1ull << 32) ? static_cast<std::size_t>(((wanted >> 32) * count_) >> 32) : count_ / 2;
  std::size_t lo = 0, hi = count_;
  std::size_t step = 1;
  if (hash(guess) < wanted) {
    lo = guess + 1;
    hi = lo;
    while (hi < count_ && hash(hi) < wanted) {
      lo = hi + 1;
      hi = lo + step;
      step *= 2;
    }
    hi = std::min(hi, count_);
  } else {
    hi = guess;
    while (hi >= step && hash(hi - step) >= wanted) {
      hi -= step;
      step *= 2;
    }
    lo = hi >= step ? hi - step + 1 : 0;
  }
  while (lo < hi) {
    const std::size_t mid = lo + (hi - lo) / 2;
    if (hash(mid) < wanted) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  if (lo < count_ && hash(lo) == wanted && this->name(lo) == name) return lo;
  return std::nullopt;
}

Result<TensorEntry> TensorIndex::entry(std::size_t i) const {
  detail::ByteReader table(bytes_.substr(names_at_ - count_ * kEntryBytes + i * kEntryBytes, kEntryBytes));
  table.fixed<std::uint64_t>();
  table.fixed<std::uint64_t>();
  table.fixed<std::uint32_t>();
  const std::uint64_t body_len = table.fixed<std::uint32_t>();
  const std::uint64_t body_at = table.fixed<std::uint64_t>();
  TensorEntry tensor;
  tensor.name = std::string(name(i));
  // Only on errors: a load decodes thousands of entries.
  auto where = [&tensor](const std::string& what) { return "tensor \"" + tensor.name + "\"" + what; };
  if (name_hash(tensor.name) != hash(i)) return fail(corrupt(path_, where(": its name hash is not its name's"), tensor.name));
  detail::ByteReader in(bytes_.substr(bodies_at_ + body_at, body_len));
  const auto dtype = dtype_of_code(in.fixed<std::uint8_t>());
  if (!dtype) return fail(corrupt(path_, where(": unknown dtype"), tensor.name));
  tensor.dtype = *dtype;
  const std::uint64_t ndim = in.varint();
  if (ndim > in.left()) return fail(corrupt(path_, where(": its shape leaves the file"), tensor.name));
  for (std::uint64_t d = 0; d < ndim; ++d) tensor.shape.push_back(static_cast<std::int64_t>(in.varint()));
  if (in.failed || !detail::checked_bytes(tensor.shape, tensor.dtype)) {
    return fail(corrupt(path_, where(": its shape is not a shape"), tensor.name));
  }
  const std::uint64_t runs = in.varint();
  if (runs > in.left()) return fail(corrupt(path_, where(": its runs leave the file"), tensor.name));
  tensor.runs.resize(runs);
  for (ChunkRun& run : tensor.runs) {
    read_run(in, ndim, run);
    if (in.failed) return fail(corrupt(path_, where(": its runs leave the file"), tensor.name));
    if (auto problem = run_problem(run, tensor.shape, world_size_); !problem.empty()) {
      return fail(corrupt(path_, where(": a run " + problem), tensor.name));
    }
  }
  const std::uint8_t whole = in.fixed<std::uint8_t>();
  if (whole > 1) return fail(corrupt(path_, where(": its record is damaged"), tensor.name));
  if (whole == 1) {
    tensor.whole = read_whole(in);
    const std::uint64_t ordinal = in.varint();
    if (ordinal >= (extras_at_ - crcs_at_) / sizeof(std::uint32_t)) {
      return fail(corrupt(path_, where(": its chunk's checksum is not in the file"), tensor.name));
    }
    detail::ByteReader crc(bytes_.substr(crcs_at_ + ordinal * sizeof(std::uint32_t), sizeof(std::uint32_t)));
    tensor.whole->crc32c = {crc.fixed<std::uint32_t>()};
    const WholeChunk& chunk = *tensor.whole;
    const auto bytes = detail::checked_bytes(tensor.shape, tensor.dtype);
    if (in.failed) return fail(corrupt(path_, where(": its whole chunk leaves the file"), tensor.name));
    if (!is_plain_file_name(chunk.file) || chunk.file == tensor_index_file) {
      return fail(corrupt(path_, where(": its chunk's file is not a plain file name in the checkpoint directory"), tensor.name));
    }
    if (chunk.begin > chunk.end || chunk.end > chunk.file_size || chunk.end - chunk.begin != *bytes ||
        chunk.crc32c.size() != checksum_blocks(chunk.end - chunk.begin, block_size_)) {
      return fail(corrupt(path_, where(": its chunk's byte range or checksums do not fit its file and shape"), tensor.name));
    }
    if (tensor.runs.size() != 1 || tensor.runs[0].count != 1 || !covers_in_one_run(tensor.runs, tensor.shape)) {
      return fail(corrupt(path_, where(": it has a whole chunk and other chunks"), tensor.name));
    }
  }
  if (!in.done()) return fail(corrupt(path_, where(": its record has bytes past its runs"), tensor.name));
  return tensor;
}

// --- a rank's index --------------------------------------------------------------------

std::string encode_rank_index(RankIndex index) {
  std::ranges::sort(index.chunks, [](const RankIndex::Chunk& a, const RankIndex::Chunk& b) {
    return a.name_hash != b.name_hash ? a.name_hash < b.name_hash : box_before(a.box, b.box);
  });
  detail::ByteWriter out;
  out.raw(kRankMagic);
  out.varint(static_cast<std::uint32_t>(index.rank));
  out.text(index.save_id);
  out.varint(index.files.size());
  for (const auto& file : index.files) {
    out.text(file.name);
    out.varint(file.size);
  }
  out.varint(index.chunks.size());
  for (const auto& chunk : index.chunks) {
    out.fixed<std::uint64_t>(chunk.name_hash);
    out.varint(chunk.box.offsets.size());
    for (std::size_t d = 0; d < chunk.box.offsets.size(); ++d) {
      out.varint(static_cast<std::uint64_t>(chunk.box.offsets[d]));
      out.varint(static_cast<std::uint64_t>(chunk.box.sizes[d]));
    }
    out.varint(chunk.file);
    out.varint(chunk.begin);
    out.varint(chunk.end);
    for (std::uint32_t crc : chunk.crc32c) out.fixed<std::uint32_t>(crc);
  }
  out.fixed<std::uint32_t>(crc32c(std::as_bytes(std::span(out.bytes()))));
  return std::move(out.bytes());
}

Result<RankIndexView> RankIndexView::open(std::string bytes, int rank, std::string_view save_id,
                                          std::uint64_t block_size, std::string path) {
  RankIndexView view;
  view.bytes_ = std::move(bytes);
  view.path_ = std::move(path);
  view.block_size_ = block_size;
  const std::string_view all(view.bytes_);
  const std::string& where_file = view.path_;
  if (all.size() < kRankMagic.size() + sizeof(std::uint32_t) || all.substr(0, kRankMagic.size()) != kRankMagic) {
    return fail(corrupt(where_file, "not a corockpt rank index"));
  }
  const std::string_view body = all.substr(0, all.size() - sizeof(std::uint32_t));
  detail::ByteReader trailer(all.substr(body.size()));
  if (crc32c(std::as_bytes(std::span(body))) != trailer.fixed<std::uint32_t>()) {
    return fail(corrupt(where_file, "checksum mismatch: the rank index is damaged"));
  }
  detail::ByteReader in(body);
  in.raw(kRankMagic.size());
  view.rank_ = static_cast<int>(in.varint());
  view.save_id_ = std::string(in.text());
  if (in.failed || view.rank_ != rank || view.save_id_ != save_id) {
    return fail(corrupt(where_file, "it is rank " + std::to_string(view.rank_) + "'s index of save \"" + view.save_id_ +
                                        "\", not rank " + std::to_string(rank) + "'s of this checkpoint's save \"" +
                                        std::string(save_id) + "\""));
  }
  const std::uint64_t files = in.varint();
  if (files > in.left()) return fail(corrupt(where_file, "its file list leaves the file"));
  for (std::uint64_t f = 0; f < files; ++f) {
    RankIndex::File file{std::string(in.text()), in.varint()};
    if (in.failed || !is_plain_file_name(file.name) || file.name == tensor_index_file) {
      return fail(corrupt(where_file, "file " + std::to_string(f) + " is not a plain file name in the checkpoint directory"));
    }
    view.files_.push_back(std::move(file));
  }
  // Each chunk's record found and stepped over (its hash kept for lookups), not decoded.
  const std::uint64_t chunks = in.varint();
  if (chunks > in.left()) return fail(corrupt(where_file, "its chunk list leaves the file"));
  view.chunks_.resize(chunks);
  for (std::uint64_t c = 0; c < chunks; ++c) {
    Record& record = view.chunks_[c];
    record.at = in.at();
    record.hash = in.fixed<std::uint64_t>();
    const std::uint64_t ndim = in.varint();
    if (ndim > in.left()) break;
    for (std::uint64_t d = 0; d < 2 * ndim; ++d) in.varint();
    in.varint();  // its file
    const std::uint64_t begin = in.varint();
    const std::uint64_t end = in.varint();
    if (in.failed || begin > end) break;  // chunk(c) says what is wrong
    const std::uint64_t sums = checksum_blocks(end - begin, block_size);
    if (sums > in.left() / sizeof(std::uint32_t)) break;
    in.raw(sums * sizeof(std::uint32_t));
    if (c > 0 && view.chunks_[c - 1].hash > record.hash) {
      return fail(corrupt(where_file, "its chunks are not in order at chunk " + std::to_string(c)));
    }
  }
  if (in.failed || !in.done()) {
    // The first record that does not parse, named by its full decode.
    for (std::size_t c = 0; c < view.chunks_.size(); ++c) {
      if (auto chunk = view.chunk(c); !chunk) return fail(chunk.error());
    }
    return fail(corrupt(where_file, "bytes past its last chunk"));
  }
  return view;
}

Result<RankIndex::Chunk> RankIndexView::chunk(std::size_t c) const {
  // Only on errors: thousands of chunks an index, several indexes a load.
  auto where = [c] { return "chunk " + std::to_string(c); };
  const std::string_view records = body();
  detail::ByteReader in(records.substr(std::min<std::size_t>(chunks_[c].at, records.size())));
  RankIndex::Chunk chunk;
  chunk.name_hash = in.fixed<std::uint64_t>();
  const std::uint64_t ndim = in.varint();
  if (ndim > in.left()) return fail(corrupt(path_, where() + " leaves the file"));
  chunk.box.offsets.resize(ndim);
  chunk.box.sizes.resize(ndim);
  for (std::uint64_t d = 0; d < ndim; ++d) {
    chunk.box.offsets[d] = static_cast<std::int64_t>(in.varint());
    chunk.box.sizes[d] = static_cast<std::int64_t>(in.varint());
  }
  const std::uint64_t file = in.varint();
  chunk.begin = in.varint();
  chunk.end = in.varint();
  if (in.failed) return fail(corrupt(path_, where() + " leaves the file"));
  if (file >= files_.size()) return fail(corrupt(path_, where() + " names a file the index does not list"));
  chunk.file = static_cast<std::uint32_t>(file);
  auto range = [&chunk] { return "bytes [" + std::to_string(chunk.begin) + ", " + std::to_string(chunk.end) + ")"; };
  if (chunk.begin > chunk.end) return fail(corrupt(path_, where() + ": " + range() + " end before they begin"));
  if (chunk.end > files_[file].size) {
    return fail(corrupt(path_, where() + ": " + range() + " run past the end of file \"" + files_[file].name + "\" (" +
                                   std::to_string(files_[file].size) + " bytes)"));
  }
  const std::uint64_t sums = checksum_blocks(chunk.end - chunk.begin, block_size_);
  if (sums > in.left() / sizeof(std::uint32_t)) return fail(corrupt(path_, where() + "'s checksums leave the file"));
  chunk.crc32c.resize(sums);
  for (auto& crc : chunk.crc32c) crc = in.fixed<std::uint32_t>();
  return chunk;
}

Result<std::optional<RankIndex::Chunk>> RankIndexView::find(std::uint64_t hash, const Box& box) const {
  auto it = std::lower_bound(chunks_.begin(), chunks_.end(), hash, [](const Record& r, std::uint64_t h) { return r.hash < h; });
  const std::string_view records = body();
  for (; it != chunks_.end() && it->hash == hash; ++it) {
    // The box compared where it lies (a rank may hold many chunks of one tensor); only
    // the match decoded.
    detail::ByteReader in(records.substr(std::min<std::size_t>(it->at + sizeof(std::uint64_t), records.size())));
    bool same = in.varint() == box.offsets.size();
    for (std::size_t d = 0; same && d < box.offsets.size(); ++d) {
      same = in.varint() == static_cast<std::uint64_t>(box.offsets[d]) &&
             in.varint() == static_cast<std::uint64_t>(box.sizes[d]);
    }
    if (!same || in.failed) continue;
    auto chunk = this->chunk(static_cast<std::size_t>(it - chunks_.begin()));
    if (!chunk) return fail(chunk.error());
    return std::optional(std::move(*chunk));
  }
  return std::optional<RankIndex::Chunk>();
}

Result<RankIndex> decode_rank_index(std::string_view bytes, int rank, std::string_view save_id,
                                    std::uint64_t block_size, const std::string& path) {
  auto view = RankIndexView::open(std::string(bytes), rank, save_id, block_size, path);
  if (!view) return fail(view.error());
  RankIndex index{.rank = view->rank(), .save_id = std::string(save_id), .files = view->files(), .chunks = {}};
  index.chunks.reserve(view->size());
  for (std::size_t c = 0; c < view->size(); ++c) {
    auto chunk = view->chunk(c);
    if (!chunk) return fail(chunk.error());
    if (c > 0) {
      const auto& before = index.chunks.back();
      if (before.name_hash > chunk->name_hash || (before.name_hash == chunk->name_hash && !box_before(before.box, chunk->box))) {
        return fail(corrupt(path, "its chunks are not in order at chunk " + std::to_string(c)));
      }
    }
    index.chunks.push_back(std::move(*chunk));
  }
  return index;
}

}  // namespace corockpt
