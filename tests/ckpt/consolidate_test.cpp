// Streaming consolidation: a checkpoint saved by two ranks becomes safetensors files whose
// every byte is checked, written in windows small enough that window edges cut elements
// of every width, the header spans several windows, and tensors are larger than a window.
#include "corockpt/ckpt/consolidate.hpp"

#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "corockpt/ckpt/dtype.hpp"
#include "corockpt/ckpt/save_steps.hpp"
#include "tests/support/local_ranks.hpp"
#include "tests/support/run_sync.hpp"
#include "tests/support/temp_dir.hpp"

using namespace corockpt;
using corockpt::test::TempDir;
using corockpt::test::TestIo;

namespace {

struct Tensor {
  std::string name;
  DType dtype;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> bytes;  // the full tensor, row-major
};

// Element i of a tensor named `name`: distinct per tensor and per element.
std::vector<std::byte> make_bytes(const std::string& name, DType dtype, std::int64_t numel) {
  std::vector<std::byte> bytes(static_cast<std::size_t>(numel) * size_of(dtype));
  const auto salt = static_cast<std::int64_t>(std::hash<std::string>{}(name) % 1000);
  for (std::int64_t i = 0; i < numel; ++i) {
    std::byte* at = bytes.data() + i * static_cast<std::int64_t>(size_of(dtype));
    const std::int64_t v = (i * 7 + salt) % 200 + 1;  // exact in bfloat16
    if (dtype == DType::bfloat16) {
      const std::uint16_t bits = float_to_bfloat16_bits(static_cast<float>(v));
      std::memcpy(at, &bits, 2);
    } else if (dtype == DType::float32) {
      const auto f = static_cast<float>(v);
      std::memcpy(at, &f, 4);
    } else if (dtype == DType::float64) {
      const auto d = static_cast<double>(v);
      std::memcpy(at, &d, 8);
    } else {
      std::memcpy(at, &v, 8);
    }
  }
  return bytes;
}

std::vector<Tensor> make_tensors() {
  std::vector<Tensor> tensors;
  auto add = [&](std::string name, DType dtype, std::vector<std::int64_t> shape) {
    std::int64_t numel = 1;
    for (auto d : shape) numel *= d;
    auto bytes = make_bytes(name, dtype, numel);
    tensors.push_back({std::move(name), dtype, std::move(shape), std::move(bytes)});
  };
  add("a.odd", DType::bfloat16, {3, 7});     // 42 bytes: what follows starts off a 4-byte boundary
  add("b.big", DType::float32, {300, 101});  // 121200 bytes: many windows
  add("c.scalar", DType::int64, {});
  add("d.empty", DType::float32, {0, 4});
  add("e.wide", DType::float64, {77});
  for (int i = 0; i < 60; ++i) add("f." + std::to_string(100 + i), DType::float32, {3});  // a header over 4 KiB
  add("state.x", DType::float32, {5});
  return tensors;
}

// Saves `tensors` on two ranks: rank 0 the top rows of each tensor, rank 1 the rest.
void save_two_ranks(TestIo& io, const std::string& dir, std::vector<Tensor>& tensors) {
  auto tmp = test::run_sync(io.runtime(), begin_save(io.io(), dir));
  REQUIRE(tmp);
  SaveOptions options;
  options.checksum_block = 4096;
  std::vector<std::string> plans;
  for (int rank = 0; rank < 2; ++rank) {
    std::vector<LocalChunk> chunks;
    for (auto& t : tensors) {
      Box box = whole_box(t.shape);
      std::span<std::byte> bytes = t.bytes;
      if (!t.shape.empty() && t.shape[0] > 1) {  // split by rows
        const std::int64_t half = t.shape[0] / 2;
        const std::size_t row = t.bytes.size() / static_cast<std::size_t>(t.shape[0]);
        box.offsets[0] = rank == 0 ? 0 : half;
        box.sizes[0] = rank == 0 ? half : t.shape[0] - half;
        bytes =
            bytes.subspan(static_cast<std::size_t>(box.offsets[0]) * row, static_cast<std::size_t>(box.sizes[0]) * row);
      } else if (rank == 1) {
        continue;  // rank 0 writes it whole
      }
      chunks.push_back(
          LocalChunk{.name = t.name, .dtype = t.dtype, .shape = t.shape, .box = box, .bytes = bytes, .writer = true});
    }
    plans.push_back(
        plan_text(test::run_sync(io.runtime(), write_rank_data(io.io(), tmp->path, rank, chunks, options))));
  }
  CheckpointMetadata base;
  base.world_size = 2;
  base.block_size = options.checksum_block;
  REQUIRE(test::run_sync(io.runtime(), commit_save(io.io(), plans, base, tmp->path, dir)));
}

// Every tensor of the output (by the index) equals its source, byte for byte, and each
// file is exactly header + data long. @returns the tensors found.
std::size_t check_output(const std::string& out, const std::vector<Tensor>& tensors, bool states) {
  std::ifstream index_file(out + "/model.safetensors.index.json");
  const auto index = nlohmann::json::parse(index_file);
  std::map<std::string, std::string> weight_map = index["weight_map"];
  std::size_t found = 0;
  for (const auto& t : tensors) {
    const bool expected = states || !t.name.starts_with("state.");
    REQUIRE(weight_map.contains(t.name) == expected);
    if (!expected) continue;
    std::ifstream in(out + "/" + weight_map[t.name], std::ios::binary);
    std::vector<char> file((std::istreambuf_iterator<char>(in)), {});
    REQUIRE(file.size() >= 8);
    std::uint64_t n = 0;
    std::memcpy(&n, file.data(), 8);
    const auto header = nlohmann::json::parse(std::string(file.data() + 8, n));
    const auto& entry = header[t.name];
    CHECK(entry["shape"].get<std::vector<std::int64_t>>() == t.shape);
    const auto offsets = entry["data_offsets"].get<std::vector<std::uint64_t>>();
    REQUIRE(offsets[1] - offsets[0] == t.bytes.size());
    std::uint64_t data_end = 0;
    for (const auto& [key, value] : header.items()) {
      if (key != "__metadata__") data_end = std::max(data_end, value["data_offsets"][1].get<std::uint64_t>());
    }
    REQUIRE(file.size() == 8 + n + data_end);  // truncated to its size after the aligned writes
    INFO(t.name);
    const std::vector<std::byte> written(reinterpret_cast<const std::byte*>(file.data()) + 8 + n + offsets[0],
                                         reinterpret_cast<const std::byte*>(file.data()) + 8 + n + offsets[1]);
    CHECK(written == t.bytes);
    ++found;
  }
  return found;
}

}  // namespace

TEST_CASE("consolidate: streamed through small windows, every tensor's bytes land in place") {
  TempDir tmp;
  TestIo io;
  auto tensors = make_tensors();
  const std::string dir = tmp.file("ckpt");
  save_two_ranks(io, dir, tensors);

  for (std::uint64_t window : {4096ull, 12288ull, 32ull << 20}) {
    for (std::uint64_t max_file : {1000ull, 5'000'000'000ull}) {
      INFO("windows of " << window << " bytes, files of at most " << max_file);
      const std::string out = tmp.file("out-" + std::to_string(window) + "-" + std::to_string(max_file));
      ConsolidateOptions options;
      options.window_bytes = window;
      options.max_file_bytes = max_file;
      options.optimizer_states = window == 4096;
      // The callback runs on the runtime's thread: it records, this thread asserts.
      std::uint64_t last_done = 0, last_total = 0;
      bool monotonic = true;
      options.progress = [&](std::uint64_t done, std::uint64_t total) {
        monotonic = monotonic && done >= last_done;
        last_done = done;
        last_total = total;
      };
      auto report = test::run_sync(io.runtime(), consolidate_checkpoint(io.io(), dir, out, options));
      INFO((report ? std::string() : report.error().to_string()));
      REQUIRE(report);
      CHECK(monotonic);
      CHECK(last_done == last_total);
      CHECK(last_total == report->bytes);
      const std::size_t found = check_output(out, tensors, options.optimizer_states);
      CHECK(found == report->tensors);
      if (max_file == 1000) {
        CHECK(report->files > 2);  // b.big alone in one
      } else {
        CHECK(report->files == 1);
      }
    }
  }
}

TEST_CASE("consolidate: a window that is not a multiple of 4096 is refused before anything is written") {
  TempDir tmp;
  TestIo io;
  auto tensors = make_tensors();
  const std::string dir = tmp.file("ckpt");
  save_two_ranks(io, dir, tensors);
  ConsolidateOptions options;
  options.window_bytes = 5000;
  auto report = test::run_sync(io.runtime(), consolidate_checkpoint(io.io(), dir, tmp.file("out"), options));
  REQUIRE_FALSE(report);
  CHECK(report.error().code == Errc::invalid_argument);
  CHECK_FALSE(std::filesystem::exists(tmp.file("out")));
}
