#include <catch2/catch.hpp>
#include <string>

#include "corockpt/ckpt/format/checkpoint_metadata.hpp"

using namespace corockpt;

namespace {

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

TensorRecord record_of(std::vector<std::int64_t> shape, const std::vector<Box>& boxes) {
  TensorRecord record{DType::float32, std::move(shape), {}};
  for (const auto& box : boxes) record.chunks.push_back(ChunkRecord{box, "f.safetensors", 0, 0, {}});
  return record;
}

// The boxes of a rows x cols grid over `shape` (uneven parts by the Shard chunk rule).
std::vector<Box> grid(const std::vector<std::int64_t>& shape, std::int64_t rows, std::int64_t cols) {
  std::vector<Box> boxes;
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      const Range row = shard_range(shape[0], rows, r);
      const Range col = shard_range(shape[1], cols, c);
      boxes.push_back(Box{{row.offset, col.offset}, {row.length, col.length}});
    }
  }
  return boxes;
}

Error rejection(const TensorRecord& record) {
  auto checked = check_tiling("w", record);
  REQUIRE_FALSE(checked);
  CHECK(checked.error().code == Errc::corrupt);
  CHECK(contains(checked.error().message, "tensor \"w\""));
  return checked.error();
}

}  // namespace

TEST_CASE("tiling - chunks that tile the shape exactly pass") {
  CHECK(check_tiling("w", record_of({7, 5}, grid({7, 5}, 3, 2))));
  CHECK(check_tiling("w", record_of({3, 5}, grid({3, 5}, 4, 1))));  // an empty trailing part
  // FSDP1 flat ranges of a 3-d tensor, saved as they lie.
  std::vector<Box> flat;
  for (auto [begin, end] : {std::pair{0, 11}, {11, 40}, {40, 41}, {41, 60}}) {
    for (auto& box : flat_range_boxes({3, 4, 5}, begin, end)) flat.push_back(box);
  }
  CHECK(check_tiling("w", record_of({3, 4, 5}, flat)));
  // An empty tensor needs no chunks.
  CHECK(check_tiling("w", record_of({0, 4}, {})));
}

TEST_CASE("tiling - thousands of chunks are checked, along the dim they split") {
  CHECK(check_tiling("w", record_of({64, 4096}, grid({64, 4096}, 1, 4096))));  // Shard(1)
  CHECK(check_tiling("w", record_of({4096, 64}, grid({4096, 64}, 4096, 1))));  // Shard(0)
  CHECK(check_tiling("w", record_of({640, 640}, grid({640, 640}, 64, 64))));   // 2-d

  auto doubled = grid({64, 4096}, 1, 4096);
  doubled.push_back(doubled[2024]);
  CHECK(contains(rejection(record_of({64, 4096}, doubled)).message, "overlap"));
}

TEST_CASE("tiling - overlapping chunks are rejected naming both boxes") {
  const auto e = rejection(record_of({4, 4}, {Box{{0, 0}, {3, 4}}, Box{{2, 0}, {2, 4}}}));
  CHECK(contains(e.message, "overlap"));
  CHECK(contains(e.message, Box{{0, 0}, {3, 4}}.to_string()));
  CHECK(contains(e.message, Box{{2, 0}, {2, 4}}.to_string()));
  // Sizes that add up to the shape's do not hide an overlap (and a hole beside it).
  CHECK(contains(rejection(record_of({2, 2}, {Box{{0, 0}, {2, 1}}, Box{{0, 0}, {1, 2}}})).message, "overlap"));
}

TEST_CASE("tiling - a gap is rejected with the number of elements not covered") {
  const auto e = rejection(record_of({4, 4}, {Box{{0, 0}, {2, 4}}, Box{{3, 0}, {1, 4}}}));
  CHECK(contains(e.message, "12 of 16"));
  CHECK(contains(e.message, "4 not covered"));
  CHECK(contains(rejection(record_of({4}, {})).message, "0 of 4"));
}

TEST_CASE("tiling - a 0-d tensor is tiled by exactly one chunk with no dims") {
  CHECK(check_tiling("w", record_of({}, {Box{}})));
  CHECK(contains(rejection(record_of({}, {})).message, "0 of 1"));
  CHECK(contains(rejection(record_of({}, {Box{}, Box{}})).message, "overlap"));
}

TEST_CASE("tiling - chunks outside the shape or of another ndim are rejected") {
  CHECK(contains(rejection(record_of({4}, {Box{{2}, {4}}})).message, "within shape"));
  CHECK(contains(rejection(record_of({4}, {Box{{0, 0}, {4, 1}}})).message, "within shape"));
  CHECK(contains(rejection(record_of({-1}, {})).message, "shape"));
}
