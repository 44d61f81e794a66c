#include "corockpt/ckpt/box.hpp"

#include <catch2/catch.hpp>
#include <cstring>
#include <numeric>

using namespace corockpt;

namespace {

using Shape = std::vector<std::int64_t>;

DeviceMesh mesh_of(Shape shape, std::vector<std::string> names) {
  return DeviceMesh::create(std::move(shape), std::move(names)).value();
}

// The contents of `box` of a global tensor whose element at flat index i is i.
std::vector<std::int32_t> global_values_in(const Shape& global_shape, const Box& box) {
  std::vector<std::int32_t> whole(static_cast<std::size_t>(whole_box(global_shape).numel()));
  std::iota(whole.begin(), whole.end(), 0);
  std::vector<std::int32_t> part(static_cast<std::size_t>(box.numel()));
  copy_overlap(whole_box(global_shape), std::as_bytes(std::span(whole)), box,
               std::as_writable_bytes(std::span(part)), sizeof(std::int32_t));
  return part;
}

// Row-major flat indices, in a global tensor of `shape`, of the elements of `box`.
std::vector<std::int64_t> flat_indices(const Shape& shape, const Box& box) {
  std::vector<std::int64_t> out;
  std::vector<std::int64_t> index(box.sizes.size(), 0);
  for (std::int64_t n = 0; n < box.numel(); ++n) {
    std::int64_t flat = 0;
    for (std::size_t d = 0; d < shape.size(); ++d) flat = flat * shape[d] + box.offsets[d] + index[d];
    out.push_back(flat);
    for (std::size_t d = index.size(); d-- > 0;) {
      if (++index[d] < box.sizes[d]) break;
      index[d] = 0;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("box - shard_range follows DTensor's chunk rule") {
  // Even.
  for (int k = 0; k < 4; ++k) CHECK(shard_range(16, 4, k) == Range{4 * k, 4});
  // n = 5 over 4: chunk 2 -> [0,2) [2,4) [4,5) [5,5).
  CHECK(shard_range(5, 4, 0) == Range{0, 2});
  CHECK(shard_range(5, 4, 1) == Range{2, 2});
  CHECK(shard_range(5, 4, 2) == Range{4, 1});
  CHECK(shard_range(5, 4, 3) == Range{5, 0});
  // Several empty trailing parts, all at offset n: 3 over 8 has chunk 1.
  CHECK(shard_range(3, 8, 2) == Range{2, 1});
  for (int k = 3; k < 8; ++k) CHECK(shard_range(3, 8, k) == Range{3, 0});
  // 10 over 4: chunk 3 -> [0,3) [3,6) [6,9) [9,10).
  CHECK(shard_range(10, 4, 3) == Range{9, 1});
  CHECK(shard_range(0, 3, 1) == Range{0, 0});
  CHECK(shard_range(7, 1, 0) == Range{0, 7});
}

TEST_CASE("box - parts of every split tile the dim exactly, in order") {
  for (std::int64_t n = 0; n <= 20; ++n) {
    for (std::int64_t parts = 1; parts <= 9; ++parts) {
      std::int64_t next = 0;
      for (std::int64_t k = 0; k < parts; ++k) {
        const Range r = shard_range(n, parts, k);
        if (r.length == 0) {
          CHECK(r.offset == n);
        } else {
          CHECK(r.offset == next);
          next += r.length;
        }
      }
      CHECK(next == n);
    }
  }
}

TEST_CASE("box - numel, empty, intersect") {
  Box a{{0, 2}, {4, 4}};
  CHECK(a.numel() == 16);
  CHECK_FALSE(a.empty());
  CHECK(Box{}.numel() == 1);  // a 0-d box is one scalar
  CHECK(Box{{5}, {0}}.empty());
  Box b{{2, 0}, {4, 3}};
  CHECK(intersect(a, b) == Box{{2, 2}, {2, 1}});
  CHECK(intersect(a, Box{{4, 0}, {1, 1}}).empty());
  CHECK(intersect(a, Box{{0}, {4}}).empty());  // different ndim: nothing in common
  CHECK(a.to_string() == "[offsets=[0, 2], sizes=[4, 4]]");
}

TEST_CASE("box - local_box on a 1-d mesh: Shard(0), even and uneven") {
  auto mesh = mesh_of({8}, {"fsdp"});
  for (int r = 0; r < 8; ++r) {
    CHECK(local_box({16, 16}, mesh, {Placement::Shard(0)}, r).value() == Box{{2 * r, 0}, {2, 16}});
    CHECK(local_box({16}, mesh, {Placement::Shard(0)}, r).value() == Box{{2 * r}, {2}});
    CHECK(local_box({16, 16}, mesh, {Placement::Replicate()}, r).value() == Box{{0, 0}, {16, 16}});
  }
  // 5 rows over 8 ranks: chunk 1; ranks 5..7 hold empty shards at offset 5.
  CHECK(local_box({5, 3}, mesh, {Placement::Shard(0)}, 4).value() == Box{{4, 0}, {1, 3}});
  CHECK(local_box({5, 3}, mesh, {Placement::Shard(0)}, 6).value() == Box{{5, 0}, {0, 3}});
  // Shard(1) splits columns.
  CHECK(local_box({2, 12}, mesh, {Placement::Shard(1)}, 5).value() == Box{{0, 10}, {2, 2}});
  // A mesh of other ranks: the position in the mesh counts, not the rank number.
  auto dp = DeviceMesh::create({2}, {"dp"}, {3, 7}).value();
  CHECK(local_box({16}, dp, {Placement::Shard(0)}, 7).value() == Box{{8}, {8}});
}

TEST_CASE("box - local_box on a 2-d mesh: HSDP, two tensor dims, nested shards") {
  auto mesh = mesh_of({2, 4}, {"replicate", "shard"});
  for (int r = 0; r < 8; ++r) {
    INFO("rank " << r);
    // HSDP: replicated along dim 0 of the mesh, 10 rows sharded along dim 1 (chunk 3).
    const Range rows = shard_range(10, 4, r % 4);
    CHECK(local_box({10, 3}, mesh, {Placement::Replicate(), Placement::Shard(0)}, r).value() ==
          Box{{rows.offset, 0}, {rows.length, 3}});
    // Each mesh dim splits its own tensor dim.
    CHECK(local_box({4, 8}, mesh, {Placement::Shard(0), Placement::Shard(1)}, r).value() ==
          Box{{2 * (r / 4), 2 * (r % 4)}, {2, 2}});
    // Both split dim 0: the second splits the first's part (16 rows: 8 per outer, 2 per inner).
    CHECK(local_box({16}, mesh, {Placement::Shard(0), Placement::Shard(0)}, r).value() ==
          Box{{8 * (r / 4) + 2 * (r % 4)}, {2}});
  }
  // Nested and uneven: 5 rows over (2, 2): outer [0,3) [3,5); inner halves of those.
  auto square = mesh_of({2, 2}, {"a", "b"});
  const std::vector<Placement> nested{Placement::Shard(0), Placement::Shard(0)};
  CHECK(local_box({5}, square, nested, 0).value() == Box{{0}, {2}});
  CHECK(local_box({5}, square, nested, 1).value() == Box{{2}, {1}});
  CHECK(local_box({5}, square, nested, 2).value() == Box{{3}, {1}});
  CHECK(local_box({5}, square, nested, 3).value() == Box{{4}, {1}});
  // 3 rows: the last inner part is empty and lies at the global end, 3.
  CHECK(local_box({3}, square, nested, 2).value() == Box{{2}, {1}});
  CHECK(local_box({3}, square, nested, 3).value() == Box{{3}, {0}});
}

TEST_CASE("box - local_box errors name the problem") {
  auto mesh = mesh_of({2, 4}, {"dp", "ep"});
  auto count = local_box({16}, mesh, {Placement::Shard(0)}, 0);
  REQUIRE_FALSE(count);
  CHECK(count.error().code == Errc::invalid_argument);
  CHECK(count.error().message.find("1 placements for a 2-d mesh") != std::string::npos);
  auto dim = local_box({16}, mesh, {Placement::Replicate(), Placement::Shard(1)}, 0);
  REQUIRE_FALSE(dim);
  CHECK(dim.error().message.find("Shard(1)") != std::string::npos);
  auto rank = local_box({16}, mesh, {Placement::Replicate(), Placement::Shard(0)}, 8);
  REQUIRE_FALSE(rank);
  CHECK(rank.error().code == Errc::not_found);
  CHECK(rank.error().message.find("rank 8") != std::string::npos);
  CHECK_FALSE(local_box({-1}, mesh_of({1}, {"x"}), {Placement::Shard(0)}, 0));
}

TEST_CASE("box - copy_overlap copies exactly the common part of two 2-d boxes") {
  const Shape global{6, 7};
  const Box src_box{{1, 2}, {3, 4}};  // rows 1..3, cols 2..5
  const Box dst_box{{2, 0}, {3, 5}};  // rows 2..4, cols 0..4
  auto src = global_values_in(global, src_box);
  std::vector<std::int32_t> dst(15, -1);
  copy_overlap(src_box, std::as_bytes(std::span(src)), dst_box, std::as_writable_bytes(std::span(dst)), 4);
  // Overlap: rows 2..3, cols 2..4.
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 5; ++j) {
      const int row = 2 + i;
      const int col = j;
      const bool inside = row <= 3 && col >= 2;
      INFO("row " << row << " col " << col);
      CHECK(dst[static_cast<std::size_t>(i * 5 + j)] == (inside ? row * 7 + col : -1));
    }
  }
  // Disjoint boxes copy nothing.
  std::vector<std::int32_t> untouched(4, -1);
  copy_overlap(src_box, std::as_bytes(std::span(src)), Box{{4, 0}, {2, 2}},
               std::as_writable_bytes(std::span(untouched)), 4);
  CHECK(untouched == std::vector<std::int32_t>(4, -1));
}

TEST_CASE("box - copy_overlap reassembles a tensor from every rank's shard") {
  const Shape global{5, 3, 4};
  auto mesh = mesh_of({2, 3}, {"a", "b"});
  const std::vector<Placement> placements{Placement::Shard(2), Placement::Shard(0)};
  std::vector<std::int32_t> whole(60, -1);
  for (int r = 0; r < 6; ++r) {
    const Box box = local_box(global, mesh, placements, r).value();
    auto shard = global_values_in(global, box);
    copy_overlap(box, std::as_bytes(std::span(shard)), whole_box(global),
                 std::as_writable_bytes(std::span(whole)), 4);
  }
  std::vector<std::int32_t> expected(60);
  std::iota(expected.begin(), expected.end(), 0);
  CHECK(whole == expected);
}

TEST_CASE("box - copy_overlap handles scalars and whole-row runs") {
  const float one = 1.5f;
  float out = 0.0f;
  copy_overlap(Box{}, std::as_bytes(std::span(&one, 1)), Box{}, std::as_writable_bytes(std::span(&out, 1)), 4);
  CHECK(out == 1.5f);
  // Whole rows in both boxes: one contiguous run.
  const Shape global{8, 4};
  auto src = global_values_in(global, Box{{0, 0}, {8, 4}});
  std::vector<std::int32_t> dst(12);
  copy_overlap(whole_box(global), std::as_bytes(std::span(src)), Box{{3, 0}, {3, 4}},
               std::as_writable_bytes(std::span(dst)), 4);
  std::vector<std::int32_t> expected(12);
  std::iota(expected.begin(), expected.end(), 12);
  CHECK(dst == expected);
}

TEST_CASE("box - a flat range is at most 2n-1 boxes, covering it in order") {
  const Shape shape{2, 3, 4};
  for (std::int64_t begin = 0; begin <= 24; ++begin) {
    for (std::int64_t end = begin; end <= 24; ++end) {
      INFO("[" << begin << ", " << end << ")");
      auto boxes = flat_range_boxes(shape, begin, end);
      CHECK(boxes.size() <= 5);
      std::vector<std::int64_t> covered;
      for (const Box& b : boxes) {
        CHECK_FALSE(b.empty());
        auto indices = flat_indices(shape, b);
        covered.insert(covered.end(), indices.begin(), indices.end());
      }
      std::vector<std::int64_t> expected(static_cast<std::size_t>(end - begin));
      std::iota(expected.begin(), expected.end(), begin);
      REQUIRE(covered == expected);
    }
  }
  CHECK(flat_range_boxes({16, 16}, 32, 64) == std::vector<Box>{Box{{2, 0}, {2, 16}}});
  CHECK(flat_range_boxes({16, 16}, 20, 40) ==
        std::vector<Box>{Box{{1, 4}, {1, 12}}, Box{{2, 0}, {1, 8}}});
  CHECK(flat_range_boxes({}, 0, 1) == std::vector<Box>{Box{}});
  CHECK(flat_range_boxes({4}, 2, 2).empty());
}
