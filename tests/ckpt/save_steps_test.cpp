// The steps of a save run by a caller that does the exchanges itself (PyTorch DCP's
// StorageWriter): chunks of plain memory and objects (bytes that are not tensors) written
// by two ranks, committed by the coordinator, loaded resharded, the objects read back
// checked, and a corrupted object found by verify and by the read.
#include "corockpt/ckpt/save_steps.hpp"

#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "corockpt/ckpt/checkpoint_reader.hpp"
#include "corockpt/ckpt/load.hpp"
#include "corockpt/ckpt/verify.hpp"
#include "tests/support/local_ranks.hpp"
#include "tests/support/run_sync.hpp"
#include "tests/support/temp_dir.hpp"

using namespace corockpt;
using corockpt::test::TempDir;
using corockpt::test::TestIo;

namespace {

std::span<std::byte> bytes_of(std::vector<float>& values) { return std::as_writable_bytes(std::span(values)); }
std::span<const std::byte> bytes_of(const std::string& text) { return std::as_bytes(std::span(text)); }

/// Rows [first, first + rows) of a [4, 3] float32 tensor "w", in `values`.
LocalChunk rows_of_w(std::vector<float>& values, std::int64_t first, std::int64_t rows) {
  return LocalChunk{.name = "w", .dtype = DType::float32, .shape = {4, 3}, .box = Box{{first, 0}, {rows, 3}},
                    .bytes = bytes_of(values), .writer = true};
}

/// Two ranks, each with two rows of w; rank 1 also holds the objects. @returns the dir.
std::string save_two_ranks(TestIo& io, const std::string& dir, const std::vector<std::string>& objects) {
  std::vector<float> all(12);
  std::iota(all.begin(), all.end(), 1.0f);
  std::vector<float> top(all.begin(), all.begin() + 6), bottom(all.begin() + 6, all.end());
  auto tmp = test::run_sync(io.runtime(), begin_save(io.io(), dir));
  REQUIRE(tmp);
  std::vector<LocalObject> held;
  for (std::size_t i = 0; i < objects.size(); ++i) held.push_back({"optim.param_groups.0." + std::to_string(i), bytes_of(objects[i])});
  std::vector<std::string> plans;
  SaveOptions options;
  options.checksum_block = 4;  // objects longer than a block get several checksums
  std::vector<LocalChunk> rank0{rows_of_w(top, 0, 2)}, rank1{rows_of_w(bottom, 2, 2)};
  plans.push_back(plan_text(test::run_sync(io.runtime(), write_rank_data(io.io(), tmp->path, 0, rank0, options))));
  options.objects = held;  // rank 1 holds the objects
  plans.push_back(plan_text(test::run_sync(io.runtime(), write_rank_data(io.io(), tmp->path, 1, rank1, options))));
  CheckpointMetadata base;
  base.world_size = 2;
  base.block_size = options.checksum_block;
  auto total = test::run_sync(io.runtime(), commit_save(io.io(), plans, base, tmp->path, dir));
  REQUIRE(total);
  CHECK(*total > 48);
  return dir;
}

}  // namespace

TEST_CASE("save steps - chunks and objects written by two ranks commit, load resharded and read back checked") {
  TempDir tmp;
  TestIo io;
  const std::vector<std::string> objects = {"pickled lr 0.1", "", std::string("\0binary\xff", 8)};
  const std::string dir = save_two_ranks(io, tmp.file("ckpt"), objects);
  CHECK(std::filesystem::exists(dir + "/corockpt.metadata.json"));
  CHECK(std::filesystem::exists(dir + "/" + objects_file_name(1)));
  CHECK_FALSE(std::filesystem::exists(dir + "/" + objects_file_name(0)));  // rank 0 had none

  // Loaded by one rank that holds rows 1..3 (they cross the two saved chunks).
  std::vector<float> middle(9, 0.0f);
  std::vector<LocalChunk> target{rows_of_w(middle, 1, 3)};
  auto loaded = test::run_sync(io.runtime(), load_chunks(target, io.io(), dir));
  REQUIRE(loaded);
  CHECK(middle == std::vector<float>{4, 5, 6, 7, 8, 9, 10, 11, 12});

  auto reader = test::run_sync(io.runtime(), CheckpointReader::open(io.io(), dir));
  REQUIRE(reader);
  CHECK((*reader)->metadata().version == 3);
  for (std::size_t i = 0; i < objects.size(); ++i) {
    auto back = test::run_sync(io.runtime(), (*reader)->read_object("optim.param_groups.0." + std::to_string(i)));
    INFO((back ? std::string() : back.error().to_string()));
    REQUIRE(back);
    CHECK(std::string(reinterpret_cast<const char*>(back->data()), back->size()) == objects[i]);
  }
  auto missing = test::run_sync(io.runtime(), (*reader)->read_object("optim.param_groups.1.lr"));
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == Errc::not_found);

  auto report = test::run_sync(io.runtime(), verify_checkpoint(io.io(), dir));
  REQUIRE(report);
  CHECK(report->ok());
  CHECK(report->objects == 3);
}

TEST_CASE("save steps - a corrupted object is found by verify and refused by the read") {
  TempDir tmp;
  TestIo io;
  const std::string dir = save_two_ranks(io, tmp.file("ckpt"), {"pickled lr 0.1"});
  {
    std::fstream file(dir + "/" + objects_file_name(1), std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(5);
    file.put('X');
  }
  auto report = test::run_sync(io.runtime(), verify_checkpoint(io.io(), dir));
  REQUIRE(report);
  REQUIRE(report->problems.size() == 1);
  CHECK(report->problems[0].tensor == "optim.param_groups.0.0");
  CHECK(report->problems[0].message.find("checksum mismatch") != std::string::npos);

  auto reader = test::run_sync(io.runtime(), CheckpointReader::open(io.io(), dir));
  REQUIRE(reader);
  auto back = test::run_sync(io.runtime(), (*reader)->read_object("optim.param_groups.0.0"));
  REQUIRE_FALSE(back);
  CHECK(back.error().code == Errc::corrupt);
}

TEST_CASE("save steps - an object two ranks both wrote, or a name that is a tensor and an object, is refused") {
  TempDir tmp;
  TestIo io;
  const std::string dir = tmp.file("ckpt");
  auto staging = test::run_sync(io.runtime(), begin_save(io.io(), dir));
  REQUIRE(staging);
  const std::string lr = "0.1";
  SaveOptions same;
  same.objects = {{"lr", bytes_of(lr)}};
  std::vector<std::string> plans;
  for (int r = 0; r < 2; ++r) {
    plans.push_back(plan_text(test::run_sync(io.runtime(), write_rank_data(io.io(), staging->path, r, {}, same))));
  }
  CheckpointMetadata base;
  base.world_size = 2;
  auto twice = test::run_sync(io.runtime(), commit_save(io.io(), plans, base, staging->path, dir));
  REQUIRE_FALSE(twice);
  CHECK(twice.error().code == Errc::invalid_argument);
  CHECK(twice.error().message.find("lr") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir));  // nothing under the final name
}

TEST_CASE("save steps - a checkpoint under folders that do not exist yet creates them") {
  TempDir tmp;
  TestIo io;
  const std::string dir = tmp.file("runs/a/b/ckpt");
  save_two_ranks(io, dir, {});
  CHECK(std::filesystem::exists(dir + "/corockpt.metadata.json"));
}

TEST_CASE("save steps - thousands of tensors from three ranks load on one, decoded in parts on every core") {
  // Enough tensors and chunks that a load splits its decoding and lookups into parts.
  TempDir tmp;
  TestIo io;
  const std::string dir = tmp.file("ckpt");
  constexpr int tensors = 6000, world = 3;
  auto value = [](int t, int row, int col) { return static_cast<float>(t * 10 + row * 2 + col); };
  auto begun = test::run_sync(io.runtime(), begin_save(io.io(), dir));
  REQUIRE(begun);
  std::vector<std::vector<float>> rows(world, std::vector<float>(tensors * 2));
  std::vector<std::string> plans;
  for (int rank = 0; rank < world; ++rank) {
    std::vector<LocalChunk> chunks;
    for (int t = 0; t < tensors; ++t) {
      float* row = rows[rank].data() + 2 * t;
      row[0] = value(t, rank, 0);
      row[1] = value(t, rank, 1);
      chunks.push_back(LocalChunk{.name = "layers." + std::to_string(t) + ".w", .dtype = DType::float32,
                                  .shape = {world, 2}, .box = Box{{rank, 0}, {1, 2}},
                                  .bytes = std::as_writable_bytes(std::span(row, 2)), .writer = true});
    }
    plans.push_back(plan_text(test::run_sync(io.runtime(), write_rank_data(io.io(), begun->path, rank, chunks, {}))));
  }
  CheckpointMetadata base;
  base.world_size = world;
  REQUIRE(test::run_sync(io.runtime(), commit_save(io.io(), plans, base, begun->path, dir)));

  std::vector<float> loaded(static_cast<std::size_t>(tensors) * world * 2, -1.0f);
  std::vector<LocalChunk> targets;
  for (int t = 0; t < tensors; ++t) {
    targets.push_back(LocalChunk{.name = "layers." + std::to_string(t) + ".w", .dtype = DType::float32,
                                 .shape = {world, 2}, .box = Box{{0, 0}, {world, 2}},
                                 .bytes = std::as_writable_bytes(std::span(loaded).subspan(t * world * 2, world * 2)),
                                 .writer = true});
  }
  auto report = test::run_sync(io.runtime(), load_chunks(targets, io.io(), dir));
  REQUIRE(report);
  for (int t = 0; t < tensors; ++t) {
    for (int row = 0; row < world; ++row) {
      for (int col = 0; col < 2; ++col) {
        if (loaded[static_cast<std::size_t>((t * world + row) * 2 + col)] != value(t, row, col)) {
          FAIL("tensor " << t << " row " << row << " col " << col);
        }
      }
    }
  }
}
