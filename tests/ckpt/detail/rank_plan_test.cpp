// The plans ranks send the coordinator and its merge: names sent once, runs extended
// across ranks, and plan caching, whose reused index must be the index a full merge of
// the same save would write, byte for byte.
#include "corockpt/ckpt/detail/rank_plan.hpp"

#include <catch2/catch.hpp>

#include <numeric>

using namespace corockpt;
using detail::CommitPlan;
using detail::PlanCache;

namespace {

// Rank `rank` of `world`: rows of "w" [8, 4] (torch.chunk over the world), Adam's 0-d
// "step" on rank 0 only, saved with the whole-tensor checksum `step_crc`; the layout as
// layout_data_files makes it, ranges and checksums as a save would return them.
std::string plan_of(int rank, int world, std::uint32_t step_crc, std::int64_t rows = 8) {
  static std::vector<std::byte> memory(1024);
  const std::int64_t chunk = (rows + world - 1) / world;
  const std::int64_t begin = std::min(rows, rank * chunk), end = std::min(rows, (rank + 1) * chunk);
  std::vector<LocalChunk> chunks;
  chunks.push_back(LocalChunk{.name = "w", .dtype = DType::float32, .shape = {rows, 4}, .box = Box{{begin, 0}, {end - begin, 4}},
                              .bytes = std::span(memory).first(static_cast<std::size_t>((end - begin) * 16)),
                              .writer = true});
  chunks.push_back(LocalChunk{.name = "step", .dtype = DType::float32, .shape = {}, .box = Box{},
                              .bytes = std::span(memory).first(4), .writer = rank == 0});
  const auto layout = layout_data_files(chunks, rank);
  std::vector<std::vector<WrittenChunk>> written;
  for (const auto& file : layout) {
    auto& ranges = written.emplace_back();
    std::uint64_t at = file.header.size();
    for (std::size_t i : file.chunks) {
      const std::uint64_t length = chunks[i].bytes.size();
      ranges.push_back({at, at + length, {chunks[i].name == "step" ? step_crc : 1000u + static_cast<std::uint32_t>(rank)}});
      at += length;
    }
  }
  return detail::rank_plan(chunks, rank, "save", layout, std::move(written), {}).plan;
}

std::vector<std::string> plans_of(int world, std::uint32_t step_crc) {
  std::vector<std::string> plans;
  for (int r = 0; r < world; ++r) plans.push_back(plan_of(r, world, step_crc));
  return plans;
}

}  // namespace

TEST_CASE("rank plans - a tensor sharded over the world merges into one run, named once") {
  for (int world : {1, 3, 8, 64}) {
    auto merged = detail::merge_plans(plans_of(world, 7), world);
    REQUIRE(merged);
    REQUIRE(merged->tensors.size() == 2);
    for (const TensorEntry& tensor : merged->tensors) {
      INFO(tensor.name << " on " << world << " ranks");
      CHECK(tensor.runs.size() == 1);
      if (tensor.name == "step") {
        REQUIRE(tensor.whole);
        CHECK(tensor.whole->crc32c == std::vector<std::uint32_t>{7});
      } else {
        CHECK(tensor.runs[0].count == std::min(world, 8));
        CHECK(tensor.whole.has_value() == (world == 1));  // on one rank w is small and whole
      }
    }
  }
}

TEST_CASE("rank plans - shards that overlap, leave a gap or disagree on the shape are refused") {
  auto plans = plans_of(4, 7);
  SECTION("a rank's shard missing: a gap") {
    plans.erase(plans.begin() + 1);
    auto merged = detail::merge_plans(plans, 4);
    REQUIRE_FALSE(merged);
    CHECK(merged.error().code == Errc::corrupt);
    CHECK(merged.error().context.fqn == "w");
  }
  SECTION("a rank with another shape") {
    plans[3] = plan_of(3, 4, 7, 12);
    auto merged = detail::merge_plans(plans, 4);
    REQUIRE_FALSE(merged);
    CHECK(merged.error().code == Errc::invalid_argument);
    CHECK(merged.error().message.find("rank 3") != std::string::npos);
  }
  SECTION("a rank that could not write") {
    plans[1] = "!io: disk full";
    auto merged = detail::merge_plans(plans, 4);
    REQUIRE_FALSE(merged);
    CHECK(merged.error().code == Errc::io);
    CHECK(merged.error().message.find("disk full") != std::string::npos);
  }
}

TEST_CASE("rank plans - merged on several threads: the index one thread writes, and its errors") {
  const int world = 64;
  std::vector<std::string> plans;
  for (int r = 0; r < world; ++r) plans.push_back(plan_of(r, world, 7, 256));  // 4 rows a rank: runs cross every seam
  auto one = detail::merge_plans(plans, world, 1);
  REQUIRE(one);
  const std::string expected = encode_tensor_index(one->tensors, "[]");
  for (unsigned threads : {2u, 3u, 7u, 64u, 100u}) {
    INFO(threads << " threads");
    auto several = detail::merge_plans(plans, world, threads);
    REQUIRE(several);
    CHECK(encode_tensor_index(several->tensors, "[]") == expected);
    CHECK(several->digests == one->digests);
    CHECK(several->whole_of_rank == one->whole_of_rank);
    CHECK(several->data_bytes == one->data_bytes);
  }
  SECTION("a gap at a seam") {
    plans.erase(plans.begin() + 32);
    auto merged = detail::merge_plans(plans, world, 2);
    REQUIRE_FALSE(merged);
    CHECK(merged.error().code == Errc::corrupt);
  }
  SECTION("another shape past the first thread's ranks, named as one thread names it") {
    plans[40] = plan_of(40, world, 7, 512);
    auto merged = detail::merge_plans(plans, world, 3);
    REQUIRE_FALSE(merged);
    CHECK(merged.error().message == detail::merge_plans(plans, world, 1).error().message);
    CHECK(merged.error().message.find("rank 40") != std::string::npos);
  }
}

TEST_CASE("rank plans - a cached save writes the index a full merge writes, with the new checksums") {
  const int world = 4;
  PlanCache cache;
  auto first = detail::plan_commit(plans_of(world, 7), world, "[]", nullptr);
  REQUIRE(first);
  CHECK_FALSE(first->reused);
  detail::remember(cache, *first);

  // The next save: the same layouts, the step's checksum changed, groups changed too.
  const auto full = plans_of(world, 8);
  std::vector<std::string> cached;
  for (const auto& plan : full) cached.push_back(detail::cached_plan(plan));
  CHECK(cached[1].size() < 64);  // a digest and a few sizes
  auto expected = detail::plan_commit(full, world, R"([{"lr": 0.5}])", nullptr);
  REQUIRE(expected);
  auto reused = detail::plan_commit(cached, world, R"([{"lr": 0.5}])", &cache);
  REQUIRE(reused);
  CHECK(reused->reused);
  CHECK(reused->index == expected->index);
  CHECK(reused->data_bytes == expected->data_bytes);

  // A rank whose plan is whole (it forgot its cache) among cached ones: still reused.
  cached[2] = full[2];
  auto mixed = detail::plan_commit(cached, world, R"([{"lr": 0.5}])", &cache);
  REQUIRE(mixed);
  CHECK(mixed->index == expected->index);

  SECTION("a cached plan without a cache, of another world or of a changed layout fails the save") {
    auto none = detail::plan_commit(cached, world, "[]", nullptr);
    REQUIRE_FALSE(none);
    CHECK(none.error().code == Errc::internal);
    CHECK(none.error().message.find("next save sends them whole") != std::string::npos);
    cached[2] = plan_of(2, world, 8, 12);  // rank 2's tensor grew
    auto changed = detail::plan_commit(cached, world, "[]", &cache);
    REQUIRE_FALSE(changed);
    CHECK(changed.error().message.find("rank 2's layout changed") != std::string::npos);
  }
}
