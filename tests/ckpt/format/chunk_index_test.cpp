// The binary indexes of format version 3: runs of chunks (what keeps the tensor index
// as small at 8192 ranks as at 8), the tensor index and a rank's index, each read back
// as written and refused when damaged.
#include "corockpt/ckpt/format/chunk_index.hpp"

#include <catch2/catch.hpp>

#include <random>

#include "corockpt/ckpt/format/crc32c.hpp"

using namespace corockpt;

namespace {

// Rows of a [rows, 4] tensor cut by torch.chunk into `parts`, part k on rank first + k * stride.
std::vector<ChunkRun> shard_rows(std::int64_t rows, int parts, int first, int stride) {
  const std::vector<std::int64_t> shape{rows, 4};
  const std::int64_t chunk = (rows + parts - 1) / parts;
  std::vector<ChunkRun> runs;
  for (int k = 0; k < parts; ++k) {
    const std::int64_t begin = std::min(rows, k * chunk), end = std::min(rows, (k + 1) * chunk);
    if (begin == end) continue;  // an empty shard is no chunk
    const ChunkRun run = run_of(Box{{begin, 0}, {end - begin, 4}}, shape, first + k * stride);
    if (runs.empty() || !extend_run(runs.back(), run, shape)) runs.push_back(run);
  }
  return runs;
}

std::vector<Box> cells_of(const ChunkRun& run, std::span<const std::int64_t> shape) {
  std::vector<Box> boxes;
  for (std::int64_t j = 0; j < run.count; ++j) boxes.push_back(cell_box(run, j, shape));
  return boxes;
}

}  // namespace

TEST_CASE("chunk runs - FSDP's row shards are one run whatever the ranks, uneven and empty shards included") {
  for (auto [rows, parts, stride] : {std::tuple{13, 8, 1}, {7168, 8192, 1}, {16, 4, 64}, {5, 4, 2}, {1, 3, 1}}) {
    const std::vector<std::int64_t> shape{rows, 4};
    auto runs = shard_rows(rows, parts, 3, stride);
    INFO(rows << " rows in " << parts << " parts, writers 3 + k * " << stride);
    REQUIRE(runs.size() == 1);
    CHECK(covers_in_one_run(runs, shape));
    CHECK(run_problem(runs[0], shape, 3 + parts * stride).empty());
    const std::int64_t chunk = (rows + parts - 1) / parts;
    for (std::int64_t j = 0; j < runs[0].count; ++j) {
      CHECK(cell_box(runs[0], j, shape) == Box{{j * chunk, 0}, {std::min<std::int64_t>(chunk, rows - j * chunk), 4}});
      CHECK(cell_owner(runs[0], j) == 3 + j * stride);
    }
  }
}

TEST_CASE("chunk runs - chunks that do not continue a run start another") {
  const std::vector<std::int64_t> shape{8, 4};
  ChunkRun first = run_of(Box{{0, 0}, {2, 4}}, shape, 0);
  CHECK_FALSE(extend_run(first, run_of(Box{{4, 0}, {2, 4}}, shape, 1), shape));  // a gap
  CHECK_FALSE(extend_run(first, run_of(Box{{2, 0}, {3, 4}}, shape, 1), shape));  // another step
  CHECK_FALSE(extend_run(first, run_of(Box{{2, 0}, {1, 4}}, shape, 1), shape));  // short, but not at the end
  CHECK_FALSE(extend_run(first, run_of(Box{{2, 0}, {2, 2}}, shape, 1), shape));  // another rest
  REQUIRE(extend_run(first, run_of(Box{{2, 0}, {2, 4}}, shape, 5), shape));     // writers step by 5 ...
  CHECK_FALSE(extend_run(first, run_of(Box{{4, 0}, {2, 4}}, shape, 6), shape));  // ... and go on so
  REQUIRE(extend_run(first, run_of(Box{{4, 0}, {2, 4}}, shape, 10), shape));
  CHECK(first.count == 3);
  CHECK_FALSE(covers_in_one_run(std::vector{first}, shape));  // rows 6..7 are missing

  // A box cut in its second dim steps along that dim.
  const ChunkRun columns = run_of(Box{{0, 2}, {8, 2}}, shape, 0);
  CHECK(columns.dim == 1);
  CHECK(columns.rest_offsets == std::vector<std::int64_t>{0});
  CHECK(columns.rest_sizes == std::vector<std::int64_t>{8});
  // A 0-d tensor's one chunk.
  const ChunkRun scalar = run_of(Box{}, {}, 2);
  CHECK(run_problem(scalar, {}, 3).empty());
  CHECK(covers_in_one_run(std::vector{scalar}, std::vector<std::int64_t>{}));
}

TEST_CASE("chunk runs - the cells a box overlaps are found without a scan") {
  std::mt19937 random(7);
  for (int trial = 0; trial < 600; ++trial) {
    const std::int64_t rows = 1 + random() % 40;
    const std::vector<std::int64_t> shape{rows, 3};
    const int parts = 1 + static_cast<int>(random() % 12);
    auto runs = shard_rows(rows, parts, 0, 1);
    REQUIRE(runs.size() == 1);
    if (trial % 2) {  // a run of column 1 only, which a box may miss
      runs[0].rest_offsets = {1};
      runs[0].rest_sizes = {1};
    }
    const std::int64_t from = random() % rows, length = 1 + random() % (rows - from);
    const std::int64_t column = random() % 3, columns = 1 + random() % (3 - column);
    const Box box{{from, column}, {length, columns}};
    const auto [first, last] = cells_along(runs[0], box);
    const auto cells = cells_of(runs[0], shape);
    for (std::int64_t j = 0; j < runs[0].count; ++j) {
      INFO("rows " << rows << ", parts " << parts << ", box " << box.to_string() << ", cell " << j);
      CHECK((j >= first && j < last) == !intersect(cells[static_cast<std::size_t>(j)], box).empty());
    }
  }
}

TEST_CASE("chunk runs - runs read from a file are checked before they are trusted") {
  const std::vector<std::int64_t> shape{8, 4};
  ChunkRun good = shard_rows(8, 4, 0, 1)[0];
  CHECK(run_problem(good, shape, 4).empty());
  CHECK_FALSE(run_problem(good, shape, 3).empty());  // its last writer is rank 3
  ChunkRun bad = good;
  bad.count = 5;  // cell 4 would start at row 8
  CHECK_FALSE(run_problem(bad, shape, 8).empty());
  bad = good;
  bad.dim = 2;
  CHECK_FALSE(run_problem(bad, shape, 8).empty());
  bad = good;
  bad.rest_sizes = {5};
  CHECK_FALSE(run_problem(bad, shape, 8).empty());
  bad = good;
  bad.step = std::numeric_limits<std::int64_t>::max();
  CHECK_FALSE(run_problem(bad, shape, 8).empty());
  bad = good;
  bad.owner_step = -1;  // rank -3 would write the last cell
  CHECK_FALSE(run_problem(bad, shape, 8).empty());
}

TEST_CASE("tensor index - every name of a large index is found where its hash puts it, no other name is") {
  // The lookup starts where the hash would sit were hashes spread perfectly evenly, and
  // gallops from there: every tensor of tables large and small, and no absent name.
  for (std::size_t count : {1u, 2u, 3u, 17u, 1000u, 20000u}) {
    std::vector<TensorEntry> tensors;
    for (std::size_t i = 0; i < count; ++i) {
      tensors.push_back({"layers." + std::to_string(i) + ".w", DType::float32, {4}, shard_rows(4, 1, 0, 1)});
    }
    auto index = TensorIndex::open(encode_tensor_index(tensors, "[]"), 1, 16, "idx");
    REQUIRE(index);
    for (std::size_t i = 0; i < count; ++i) {
      const auto at = index->find(tensors[i].name);
      REQUIRE(at);
      CHECK(index->name(*at) == tensors[i].name);
    }
    for (std::size_t i = 0; i < 200; ++i) CHECK_FALSE(index->find("absent." + std::to_string(i)));
  }
}

TEST_CASE("tensor index - read back as written, looked up by name, refused when damaged") {
  std::vector<TensorEntry> tensors{
      {"a.w", DType::bfloat16, {13, 4}, shard_rows(13, 8, 0, 1)},
      {"b", DType::float32, {}, {run_of(Box{}, {}, 5)}, WholeChunk{"rank00005-000.safetensors", 100, 60, 64, {9}}},
      {"c.empty", DType::float32, {0, 7}, {}},
      {"state.a.w.exp_avg", DType::float32, {13, 4}, shard_rows(13, 8, 0, 1)},
  };
  std::string bytes = encode_tensor_index(tensors, R"([{"params": ["a.w"]}])");
  auto index = TensorIndex::open(bytes, 8, 16, "idx");
  REQUIRE(index);
  CHECK(index->param_groups_json() == R"([{"params": ["a.w"]}])");
  REQUIRE(index->size() == tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto at = index->find(tensors[i].name);
    REQUIRE(at);
    auto entry = index->entry(*at);
    REQUIRE(entry);
    CHECK(*entry == tensors[i]);
  }
  CHECK_FALSE(index->find("a"));
  CHECK_FALSE(index->find("zz"));

  // A world too small for the runs' writers.
  auto small = TensorIndex::open(bytes, 4, 16, "idx");
  REQUIRE(small);
  auto entry = small->entry(*small->find("a.w"));
  REQUIRE_FALSE(entry);
  CHECK(entry.error().code == Errc::corrupt);
  CHECK(entry.error().context.fqn == "a.w");

  // Cut short, or not an index.
  for (std::size_t cut : {std::size_t{0}, std::size_t{7}, std::size_t{20}, std::size_t{40}}) {
    auto opened = TensorIndex::open(bytes.substr(0, cut), 8, 16, "idx");
    REQUIRE_FALSE(opened);
    CHECK(opened.error().code == Errc::corrupt);
    CHECK(opened.error().context.path == "idx");
  }
  // Every cut into the table, names or bodies is refused by open or by the entry it cuts.
  const std::size_t groups_at = bytes.size() - index->param_groups_json().size();
  for (std::size_t cut = 40; cut < groups_at; ++cut) {
    auto opened = TensorIndex::open(bytes.substr(0, cut), 8, 16, "idx");
    if (!opened) continue;
    bool refused = false;
    for (std::size_t i = 0; i < opened->size(); ++i) refused = refused || !opened->entry(i);
    CHECK(refused);
  }
  // Hashes out of order: entries 0 and 1 swapped (each 32 bytes, after 48 of header).
  std::string swapped = bytes;
  std::swap_ranges(swapped.begin() + 48, swapped.begin() + 80, swapped.begin() + 80);
  auto unordered = TensorIndex::open(swapped, 8, 16, "idx");
  REQUIRE_FALSE(unordered);
  CHECK(unordered.error().message.find("not in order") != std::string::npos);
}

TEST_CASE("rank index - read back as written, found by name hash and box, refused when damaged or another's") {
  RankIndex index;
  index.rank = 3;
  index.save_id = "0123456789abcdef";
  index.files = {{"rank00003-000.safetensors", 4096}, {"rank00003-001.safetensors", 100}};
  index.chunks = {{name_hash("w"), Box{{2, 0}, {2, 4}}, 0, 128, 160, {1, 2}},
                  {name_hash("w"), Box{{0, 0}, {2, 4}}, 1, 8, 40, {3, 4}},
                  {name_hash("step"), Box{}, 0, 160, 164, {5}}};
  const std::string bytes = encode_rank_index(index);
  auto back = decode_rank_index(bytes, 3, index.save_id, 16, "r3");
  REQUIRE(back);
  CHECK(back->files == index.files);
  REQUIRE(back->chunks.size() == 3);  // sorted by name hash and box
  // A load's view decodes only the chunks it looks up.
  auto view = RankIndexView::open(bytes, 3, index.save_id, 16, "r3");
  REQUIRE(view);
  CHECK(view->files() == index.files);
  for (const RankIndex::Chunk& chunk : back->chunks) {
    auto found = view->find(chunk.name_hash, chunk.box);
    REQUIRE(found);
    REQUIRE(*found);
    CHECK(**found == chunk);
  }
  auto w = view->find(name_hash("w"), Box{{0, 0}, {2, 4}});
  REQUIRE((w && *w));
  CHECK((*w)->file == 1);
  CHECK((*w)->crc32c == std::vector<std::uint32_t>{3, 4});
  auto absent = view->find(name_hash("w"), Box{{1, 0}, {2, 4}});
  REQUIRE(absent);
  CHECK_FALSE(*absent);

  auto refused = [&](const std::string& damaged, int rank, const std::string& save, const std::string& words) {
    auto decoded = decode_rank_index(damaged, rank, save, 16, "r3");
    REQUIRE_FALSE(decoded);
    CHECK(decoded.error().code == Errc::corrupt);
    CHECK(decoded.error().context.path == "r3");
    CHECK(decoded.error().message.find(words) != std::string::npos);
    // The view refuses it when it opens, or when it looks up the damaged chunk.
    auto opened = RankIndexView::open(damaged, rank, save, 16, "r3");
    std::optional<Error> error;
    if (!opened) error = opened.error();
    for (std::size_t c = 0; opened && c < opened->size() && !error; ++c) {
      if (auto chunk = opened->chunk(c); !chunk) error = chunk.error();
    }
    REQUIRE(error);
    CHECK(error->code == Errc::corrupt);
    CHECK(error->message.find(words) != std::string::npos);
  };
  std::string flipped = bytes;
  flipped[bytes.size() / 2] ^= 1;
  refused(flipped, 3, index.save_id, "checksum mismatch");
  refused(bytes.substr(0, bytes.size() - 1), 3, index.save_id, "checksum mismatch");
  refused(bytes, 4, index.save_id, "not rank 4's");
  refused(bytes, 3, "fedcba9876543210", "of this checkpoint's save");
  refused("", 3, index.save_id, "not a corockpt rank index");

  // A range past its file, or the wrong number of checksums, is refused even with a good CRC.
  RankIndex past = index;
  past.chunks[2].end = 4097;
  refused(encode_rank_index(past), 3, index.save_id, "past the end of file");
  auto blocks = decode_rank_index(bytes, 3, index.save_id, 8, "r3");  // 32 bytes are 4 blocks of 8, not 2
  CHECK_FALSE(blocks);
}
