// The load's read plan: which file bytes are read, merged into which reads.
#include "corockpt/ckpt/detail/read_plan.hpp"

#include <catch2/catch.hpp>

#include <deque>
#include <string>
#include <vector>

using namespace corockpt;
using namespace corockpt::detail;

namespace {

// Saved chunks of float32 tensors packed into files, and the needs of targets.
struct Layout {
  std::deque<std::string> names;
  std::deque<TensorRecord> records;
  std::deque<LocalChunk> targets;
  std::vector<ReadNeed> needs;

  // A [rows, cols] float32 tensor saved in row blocks of `rows_per_chunk`, packed from
  // byte `at` of `file` with `gap` bytes between chunks.
  const TensorRecord& tensor(const std::string& name, std::int64_t rows, std::int64_t cols, std::int64_t rows_per_chunk,
                             const std::string& file, std::uint64_t at, std::uint64_t gap = 0) {
    names.push_back(name);
    TensorRecord& record = records.emplace_back();
    record.dtype = DType::float32;
    record.shape = {rows, cols};
    for (std::int64_t r = 0; r < rows; r += rows_per_chunk) {
      const std::int64_t n = std::min(rows_per_chunk, rows - r);
      const std::uint64_t bytes = static_cast<std::uint64_t>(n * cols) * 4;
      record.chunks.push_back(ChunkRecord{Box{{r, 0}, {n, cols}}, file, at, at + bytes, {}});
      at += bytes + gap;
    }
    return record;
  }
  // A target holding `box` of the tensor `index` (in the order tensor() made them).
  void need(std::size_t index, Box box) {
    LocalChunk& target = targets.emplace_back();
    target.name = names[index];
    target.dtype = DType::float32;
    target.shape = records[index].shape;
    target.box = std::move(box);
    for (const auto& saved : records[index].chunks) needs.push_back({&names[index], &records[index], &saved, &target});
  }
};

std::uint64_t bytes_of(const std::vector<PlannedRead>& reads) {
  std::uint64_t total = 0;
  for (const auto& read : reads) total += read.end - read.begin;
  return total;
}

}  // namespace

TEST_CASE("read plan: neighbouring chunks of a file merge into one read, cut at max_read on block and element ends") {
  Layout layout;
  layout.tensor("a", 64, 16, 8, "f", 100);  // 8 chunks of 512 bytes from byte 100
  layout.need(0, Box{{0, 0}, {64, 16}});

  auto one = plan_reads(layout.needs, {.block_size = 64, .max_read = 1 << 20});
  REQUIRE(one.size() == 1);
  CHECK(one[0].begin == 100);
  CHECK(one[0].end == 100 + 4096);
  CHECK(one[0].segments.size() == 8);
  CHECK_FALSE(one[0].oversized);

  auto cut = plan_reads(layout.needs, {.block_size = 64, .max_read = 1000});
  CHECK(bytes_of(cut) == 4096);
  for (const auto& read : cut) {
    CHECK(read.end - read.begin <= 1000);
    for (const auto& segment : read.segments) {
      CHECK(segment.from % 64 == 0);  // a read verifies whole blocks
      CHECK((segment.to % 64 == 0 || segment.to == segment.saved->end - segment.saved->begin));
    }
  }
}

TEST_CASE("read plan: a target's part of a chunk is read over whole checksum blocks, not the whole chunk") {
  Layout layout;
  layout.tensor("a", 64, 16, 64, "f", 0);  // one 4096-byte chunk
  layout.need(0, Box{{10, 0}, {2, 16}});   // bytes 640..768
  auto reads = plan_reads(layout.needs, {.block_size = 256, .max_read = 1 << 20});
  REQUIRE(reads.size() == 1);
  CHECK(reads[0].begin == 512);
  CHECK(reads[0].end == 768);

  SECTION("a column of a row-major chunk spans its rows' hull") {
    Layout column;
    column.tensor("a", 64, 16, 64, "f", 0);
    column.need(0, Box{{4, 3}, {4, 1}});  // elements 4*16+3 .. 7*16+3
    auto hull = plan_reads(column.needs, {.block_size = 4, .max_read = 1 << 20});
    REQUIRE(hull.size() == 1);
    CHECK(hull[0].begin == (4 * 16 + 3) * 4);
    CHECK(hull[0].end == (7 * 16 + 4) * 4);
  }
}

TEST_CASE("read plan: two targets of one chunk share its bytes; gaps up to max_gap are read through") {
  Layout layout;
  layout.tensor("a", 32, 16, 8, "f", 0, 1000);  // chunks of 512 bytes, 1000-byte gaps
  layout.need(0, Box{{0, 0}, {16, 16}});
  layout.need(0, Box{{8, 0}, {24, 16}});  // overlaps the first target in chunk 1
  auto through = plan_reads(layout.needs, {.block_size = 64, .max_read = 1 << 20, .max_gap = 1000});
  REQUIRE(through.size() == 1);
  CHECK(through[0].segments.size() == 4);
  CHECK(through[0].segments[1].targets.size() == 2);  // chunk 1 is read once for both

  auto apart = plan_reads(layout.needs, {.block_size = 64, .max_read = 1 << 20, .max_gap = 999});
  CHECK(apart.size() == 4);
  CHECK(bytes_of(apart) == 4 * 512);
}

TEST_CASE("read plan: a checksum block longer than max_read is a read of its own, marked oversized") {
  Layout layout;
  layout.tensor("a", 64, 16, 64, "f", 0);  // 4096 bytes, blocks of 1024
  layout.need(0, Box{{0, 0}, {64, 16}});
  auto reads = plan_reads(layout.needs, {.block_size = 1024, .max_read = 600});
  REQUIRE(reads.size() == 4);
  for (const auto& read : reads) {
    CHECK(read.oversized);
    CHECK(read.end - read.begin == 1024);
  }
}

TEST_CASE("read plan: reads of several files interleave so that reads in flight spread over them") {
  Layout layout;
  layout.tensor("a", 64, 16, 8, "f0", 0, 4096);  // gaps wider than max_gap: one read a chunk
  layout.tensor("b", 64, 16, 8, "f1", 0, 4096);
  layout.need(0, Box{{0, 0}, {64, 16}});
  layout.need(1, Box{{0, 0}, {64, 16}});
  auto reads = plan_reads(layout.needs, {.block_size = 64, .max_read = 1 << 20, .max_gap = 1024});
  REQUIRE(reads.size() == 16);
  for (std::size_t i = 0; i < reads.size(); ++i) CHECK(*reads[i].file == (i % 2 == 0 ? "f0" : "f1"));
}

TEST_CASE("read plan: bytes of elements wider than the block are cut on element ends") {
  Layout layout;
  layout.tensor("a", 10, 3, 10, "f", 0);  // one chunk of 120 bytes
  layout.need(0, Box{{0, 0}, {10, 3}});
  auto reads = plan_reads(layout.needs, {.block_size = 6, .max_read = 20});  // granule lcm(6, 4) = 12
  CHECK(bytes_of(reads) == 120);
  for (const auto& read : reads) {
    for (const auto& segment : read.segments) {
      CHECK(segment.from % 12 == 0);
      CHECK(segment.to % 12 == 0);
    }
  }
}
