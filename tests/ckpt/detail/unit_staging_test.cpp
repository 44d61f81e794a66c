// A rank's data files laid out unit by unit in a step order, and which units are wholly
// staged as each file's staged prefix grows.
#include "corockpt/ckpt/detail/unit_staging.hpp"

#include <catch2/catch.hpp>

#include <cstddef>
#include <string>
#include <vector>

#include "corockpt/ckpt/data_file_layout.hpp"

using namespace corockpt;

namespace {

// A written 1-d chunk of `bytes` float32 bytes of unit `unit`, over `memory`.
LocalChunk chunk(const std::string& name, std::uint32_t unit, std::size_t bytes, std::vector<std::byte>& memory) {
  memory.resize(bytes);
  const auto n = static_cast<std::int64_t>(bytes / 4);
  return {.name = name, .shape = {n}, .box = {{0}, {n}}, .bytes = memory, .writer = true, .unit = unit};
}

}  // namespace

TEST_CASE(
    "unit staging - a file holds its chunks unit by unit in the step order, and each unit is staged once the prefix "
    "passes its last byte") {
  std::vector<std::vector<std::byte>> memory(5);
  std::vector<LocalChunk> chunks = {chunk("a0", 0, 400, memory[0]), chunk("b1", 1, 800, memory[1]),
                                    chunk("c0", 0, 40, memory[2]), chunk("d2", 2, 80, memory[3])};
  chunks.push_back(chunk("e3", 3, 0, memory[4]));  // unit 3: no bytes, in no file
  const std::vector<std::uint32_t> order = {2, 0, 1, 3};
  const auto files = layout_data_files(chunks, 0, order);
  REQUIRE(files.size() == 1);
  CHECK(files[0].chunks == std::vector<std::size_t>{3, 0, 2, 1});  // d2, then a0 and c0 as listed, then b1
  CHECK(layout_data_files(chunks, 0)[0].chunks == std::vector<std::size_t>{0, 1, 2, 3});  // no order: as listed

  detail::UnitStaging staging(chunks, files);
  CHECK(staging.without_bytes() == std::vector<std::uint32_t>{3});
  const std::uint64_t header = files[0].header.size();
  CHECK(staging.staged(0, header + 79).empty());
  CHECK(staging.staged(0, header + 80) == std::vector<std::uint32_t>{2});
  CHECK(staging.staged(0, header + 519).empty());
  CHECK(staging.staged(0, header + 520) == std::vector<std::uint32_t>{0});
  CHECK(staging.staged(0, header + 1319).empty());
  CHECK(staging.staged(0, files[0].size) == std::vector<std::uint32_t>{1});
  CHECK(files[0].size == header + 1320);
}

TEST_CASE("unit staging - a unit in two files is staged once both have passed it") {
  std::vector<std::vector<std::byte>> memory(3);
  // Two chunks of "w" on this rank: the second goes to file 1 (one chunk per tensor a file).
  const std::vector<LocalChunk> chunks = {chunk("w", 0, 400, memory[0]), chunk("w", 0, 400, memory[1]),
                                          chunk("v", 1, 40, memory[2])};
  const auto files = layout_data_files(chunks, 0, std::vector<std::uint32_t>{0, 1});
  REQUIRE(files.size() == 2);
  detail::UnitStaging staging(chunks, files);
  CHECK(staging.without_bytes().empty());
  CHECK(staging.staged(0, files[0].size) == std::vector<std::uint32_t>{1});  // all of unit 1 is in file 0
  CHECK(staging.staged(1, files[1].size - 1).empty());
  CHECK(staging.staged(1, files[1].size) == std::vector<std::uint32_t>{0});
}
