// The load's read path (detail/read_plan, detail/staged_reads): O_DIRECT reads of aligned
// supersets into the staging buffers, merged across chunks, verified and copied or
// converted into their targets. Checked on what packed data files make hard: chunks
// smaller than a checksum block, chunks ending inside one, a checkpoint larger than the
// staging pool, checksum blocks larger than a buffer, random reshardings with random
// block and buffer sizes, corruption found by the staged reads, and a file system that
// refuses O_DIRECT (a storage double that opens every file buffered).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "corockpt/ckpt/dtype.hpp"
#include "corockpt/ckpt/load.hpp"
#include "corockpt/ckpt/save_steps.hpp"
#include "corockpt/ckpt/verify.hpp"
#include "corockpt/plugins/storage/storage.hpp"
#include "tests/support/local_ranks.hpp"
#include "tests/support/run_sync.hpp"
#include "tests/support/temp_dir.hpp"

using namespace corockpt;
using corockpt::test::TempDir;
using corockpt::test::TestIo;

namespace {

// The value of element (row, col) of a [rows, cols] tensor: an integer every dtype used
// here holds exactly.
double value_at(std::int64_t row, std::int64_t col, std::int64_t cols) {
  return static_cast<double>(row * cols + col + 1);
}

void put(std::byte* at, DType dtype, double value) {
  if (dtype == DType::float32) {
    const auto v = static_cast<float>(value);
    std::memcpy(at, &v, sizeof v);
  } else if (dtype == DType::float64) {
    std::memcpy(at, &value, sizeof value);
  } else {
    REQUIRE(dtype == DType::int64);
    const auto v = static_cast<std::int64_t>(value);
    std::memcpy(at, &v, sizeof v);
  }
}

double get(const std::byte* at, DType dtype) {
  if (dtype == DType::float32) {
    float v;
    std::memcpy(&v, at, sizeof v);
    return v;
  }
  if (dtype == DType::float64) {
    double v;
    std::memcpy(&v, at, sizeof v);
    return v;
  }
  std::int64_t v;
  std::memcpy(&v, at, sizeof v);
  return static_cast<double>(v);
}

// A box of a 2-d tensor and its memory.
struct Held {
  Box box;
  std::vector<std::byte> bytes;
};

// The tensor cut into a grid of `parts_r` x `parts_c` boxes (uneven where it does not divide).
std::vector<Box> grid(std::int64_t rows, std::int64_t cols, std::int64_t parts_r, std::int64_t parts_c) {
  std::vector<Box> boxes;
  for (std::int64_t i = 0; i < parts_r; ++i) {
    for (std::int64_t j = 0; j < parts_c; ++j) {
      const std::int64_t r0 = rows * i / parts_r, r1 = rows * (i + 1) / parts_r;
      const std::int64_t c0 = cols * j / parts_c, c1 = cols * (j + 1) / parts_c;
      if (r1 > r0 && c1 > c0) boxes.push_back(Box{{r0, c0}, {r1 - r0, c1 - c0}});
    }
  }
  return boxes;
}

LocalChunk chunk_of(Held& held, DType dtype, std::vector<std::int64_t> shape, bool writer) {
  return LocalChunk{
      .name = "t", .dtype = dtype, .shape = std::move(shape), .box = held.box, .bytes = held.bytes, .writer = writer};
}

// Saves tensor "t" ([rows, cols] of `dtype`, value_at's values) as the chunks `boxes`,
// one per rank, with checksum blocks of `block` bytes.
std::string save_boxes(TestIo& io, const std::string& dir, std::int64_t rows, std::int64_t cols, DType dtype,
                       const std::vector<Box>& boxes, std::uint64_t block) {
  auto tmp = test::run_sync(io.runtime(), begin_save(io.io(), dir));
  REQUIRE(tmp);
  SaveOptions options;
  options.checksum_block = block;
  std::vector<std::string> plans;
  const int world = static_cast<int>(boxes.size());
  for (int rank = 0; rank < world; ++rank) {
    Held held{boxes[rank], std::vector<std::byte>(static_cast<std::size_t>(boxes[rank].numel()) * size_of(dtype))};
    std::byte* at = held.bytes.data();
    for (std::int64_t r = 0; r < held.box.sizes[0]; ++r) {
      for (std::int64_t c = 0; c < held.box.sizes[1]; ++c, at += size_of(dtype)) {
        put(at, dtype, value_at(held.box.offsets[0] + r, held.box.offsets[1] + c, cols));
      }
    }
    std::vector<LocalChunk> chunks{chunk_of(held, dtype, {rows, cols}, true)};
    plans.push_back(
        plan_text(test::run_sync(io.runtime(), write_rank_data(io.io(), tmp->path, rank, chunks, options))));
  }
  CheckpointMetadata base;
  base.world_size = world;
  base.block_size = block;
  auto total = test::run_sync(io.runtime(), commit_save(io.io(), plans, base, tmp->path, dir));
  REQUIRE(total);
  return dir;
}

// Loads the boxes `targets` (of `dtype`, poisoned first) through `io` in one load_chunks
// call and checks every element. @returns the load's report.
LoadReport load_and_check(TestIo& io, const std::string& dir, std::int64_t rows, std::int64_t cols, DType dtype,
                          const std::vector<Box>& targets) {
  std::vector<Held> held;
  for (const Box& box : targets) {
    held.push_back(
        {box, std::vector<std::byte>(static_cast<std::size_t>(box.numel()) * size_of(dtype), std::byte{0x7f})});
  }
  std::vector<LocalChunk> chunks;
  for (auto& h : held) chunks.push_back(chunk_of(h, dtype, {rows, cols}, false));
  auto loaded = test::run_sync(io.runtime(), load_chunks(chunks, io.io(), dir));
  INFO((loaded ? std::string() : loaded.error().to_string()));
  REQUIRE(loaded);
  std::int64_t wrong = 0;
  for (const auto& h : held) {
    const std::byte* at = h.bytes.data();
    for (std::int64_t r = 0; r < h.box.sizes[0]; ++r) {
      for (std::int64_t c = 0; c < h.box.sizes[1]; ++c, at += size_of(dtype)) {
        if (get(at, dtype) != value_at(h.box.offsets[0] + r, h.box.offsets[1] + c, cols)) ++wrong;
      }
    }
  }
  CHECK(wrong == 0);
  return *loaded;
}

std::uint64_t file_size(const std::string& path) { return std::filesystem::file_size(path); }

}  // namespace

TEST_CASE("load read path: chunks smaller than a checksum block load resharded") {
  TempDir tmp;
  TestIo io;
  // 6 chunks of 20 bytes, blocks of 64: every chunk is one short block.
  const std::string dir = save_boxes(io, tmp.file("ckpt"), 6, 5, DType::float32, grid(6, 5, 6, 1), 64);
  load_and_check(io, dir, 6, 5, DType::float32, grid(6, 5, 2, 2));
  load_and_check(io, dir, 6, 5, DType::float32, grid(6, 5, 1, 1));
  auto report = test::run_sync(io.runtime(), verify_checkpoint(io.io(), dir));
  REQUIRE(report);
  CHECK(report->ok());
}

TEST_CASE("load read path: chunks that end in the middle of a checksum block load resharded") {
  TempDir tmp;
  TestIo io;
  // Rows of 24 bytes in blocks of 16: each chunk's last block is half a block.
  const std::string dir = save_boxes(io, tmp.file("ckpt"), 4, 6, DType::float32, grid(4, 6, 4, 1), 16);
  load_and_check(io, dir, 4, 6, DType::float32, grid(4, 6, 3, 2));
  load_and_check(io, dir, 4, 6, DType::float32, grid(4, 6, 1, 5));
}

TEST_CASE("load read path: a checkpoint larger than the staging pool loads through it") {
  TempDir tmp;
  TestIo writer;
  // 1 MiB on 4 ranks, loaded on 3 through 4 buffers of 64 KiB (a quarter of it).
  const std::string dir = save_boxes(writer, tmp.file("ckpt"), 512, 512, DType::float32, grid(512, 512, 4, 1), 4096);
  TestIo small(StorageKind::automatic, 64 << 10, 4);
  const LoadReport report = load_and_check(small, dir, 512, 512, DType::float32, grid(512, 512, 3, 1));
  CHECK(report.bytes_read == 512 * 512 * 4);  // each byte once: neighbours merged, no overlap read twice

  SECTION("converted to another dtype on the way") {
    load_and_check(small, dir, 512, 512, DType::float64, grid(512, 512, 2, 3));
    load_and_check(small, dir, 512, 512, DType::int64, grid(512, 512, 5, 1));
  }
  SECTION("with checksum blocks larger than a buffer (each read alone in memory of its own)") {
    const std::string big =
        save_boxes(writer, tmp.file("big-blocks"), 512, 512, DType::float32, grid(512, 512, 4, 1), 192 << 10);
    load_and_check(small, big, 512, 512, DType::float32, grid(512, 512, 3, 2));
  }
}

TEST_CASE("load read path: random reshardings, dtypes, checksum blocks and staging buffers") {
  std::mt19937 random(20261205);
  auto pick = [&](auto... values) {
    const std::vector<std::common_type_t<decltype(values)...>> all{values...};
    return all[std::uniform_int_distribution<std::size_t>(0, all.size() - 1)(random)];
  };
  auto between = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(random);
  };
  TempDir tmp;
  TestIo writer;
  for (int round = 0; round < 24; ++round) {
    const std::int64_t rows = between(1, 70), cols = between(1, 70);
    const DType saved = pick(DType::float32, DType::float64, DType::int64);
    const DType loaded = pick(DType::float32, DType::float64, DType::int64);
    const std::uint64_t block = pick(4ull, 12ull, 100ull, 4096ull, 65536ull);
    const std::size_t buffer = pick(std::size_t{4096}, std::size_t{8192}, std::size_t{65536}, std::size_t{1} << 20);
    const std::size_t count = pick(std::size_t{1}, std::size_t{2}, std::size_t{8});
    const auto saved_boxes = grid(rows, cols, between(1, 6), between(1, 4));
    const auto target_boxes = grid(rows, cols, between(1, 5), between(1, 5));
    INFO("round " << round << ": [" << rows << ", " << cols << "] " << to_string(saved) << " -> " << to_string(loaded)
                  << ", block " << block << ", " << count << " buffers of " << buffer << ", " << saved_boxes.size()
                  << " saved chunks, " << target_boxes.size() << " targets");
    const std::string dir =
        save_boxes(writer, tmp.file("r" + std::to_string(round)), rows, cols, saved, saved_boxes, block);
    TestIo reader(StorageKind::automatic, buffer, count);
    load_and_check(reader, dir, rows, cols, loaded, target_boxes);
  }
}

TEST_CASE("load read path: corruption is found by the staged reads, named, and nothing half-read is reported loaded") {
  TempDir tmp;
  TestIo writer;
  const std::string dir = save_boxes(writer, tmp.file("ckpt"), 256, 256, DType::float32, grid(256, 256, 2, 1), 4096);
  const std::string data = dir + "/rank00001-000.safetensors";
  REQUIRE(std::filesystem::exists(data));
  TestIo small(StorageKind::automatic, 64 << 10, 2);
  std::vector<float> all(256 * 256);
  LocalChunk whole{.name = "t",
                   .dtype = DType::float32,
                   .shape = {256, 256},
                   .box = Box{{0, 0}, {256, 256}},
                   .bytes = std::as_writable_bytes(std::span(all))};

  SECTION("a flipped byte deep in a file: a checksum mismatch naming the tensor and the block") {
    {
      std::fstream f(data, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(static_cast<std::streamoff>(file_size(data) - 70000));
      char c;
      f.read(&c, 1);
      c = static_cast<char>(c ^ 0x10);
      f.seekp(static_cast<std::streamoff>(file_size(data) - 70000));
      f.write(&c, 1);
    }
    auto loaded = test::run_sync(small.runtime(), load_chunks(std::span(&whole, 1), small.io(), dir));
    REQUIRE_FALSE(loaded);
    CHECK(loaded.error().code == Errc::corrupt);
    CHECK_THAT(loaded.error().message, Catch::Contains("checksum mismatch in t's chunk"));
    CHECK_THAT(loaded.error().message, Catch::Contains("block"));
    CHECK(loaded.error().context.path == data);
  }
  SECTION("a data file cut short: the error says where it ends") {
    const std::uint64_t cut = file_size(data) - 100000;
    std::filesystem::resize_file(data, cut);
    auto loaded = test::run_sync(small.runtime(), load_chunks(std::span(&whole, 1), small.io(), dir));
    REQUIRE_FALSE(loaded);
    CHECK(loaded.error().code == Errc::corrupt);
    CHECK_THAT(loaded.error().message, Catch::Contains("the data file ends at byte " + std::to_string(cut)));
  }
}

namespace {

// A file system that refuses O_DIRECT: every file opens buffered.
class BufferedOnlyStorage final : public Storage {
 public:
  explicit BufferedOnlyStorage(std::unique_ptr<Storage> inner) : inner_(std::move(inner)) {}
  std::string_view name() const override { return "buffered-only"; }
  Task<File> open(std::string path, OpenOptions options) override {
    options.direct = DirectIo::never;
    return inner_->open(std::move(path), options);
  }
  Task<void> write_at(File& file, std::uint64_t offset, std::span<const std::byte> data) override {
    return inner_->write_at(file, offset, data);
  }
  Task<std::size_t> read_at(File& file, std::uint64_t offset, std::span<std::byte> data) override {
    return inner_->read_at(file, offset, data);
  }
  Task<void> fsync(File& file) override { return inner_->fsync(file); }
  Task<void> truncate(File& file, std::uint64_t size) override { return inner_->truncate(file, size); }
  Task<void> allocate(File& file, std::uint64_t size) override { return inner_->allocate(file, size); }
  Task<void> make_dir(std::string path) override { return inner_->make_dir(std::move(path)); }
  Task<void> rename(std::string from, std::string to) override {
    return inner_->rename(std::move(from), std::move(to));
  }
  Task<void> remove(std::string path) override { return inner_->remove(std::move(path)); }
  Task<std::vector<DirEntry>> list(std::string dir) override { return inner_->list(std::move(dir)); }
  Task<void> fsync_dir(std::string path) override { return inner_->fsync_dir(std::move(path)); }
  Task<std::optional<DirLock>> try_lock_dir(std::string path) override { return inner_->try_lock_dir(std::move(path)); }
  Task<std::uint64_t> allocated_bytes(std::string path) override { return inner_->allocated_bytes(std::move(path)); }

 private:
  std::unique_ptr<Storage> inner_;
};

}  // namespace

TEST_CASE("load read path: data files are read with O_DIRECT where the file system takes it, buffered where not") {
  TempDir tmp;
  TestIo io;
  const std::string dir = save_boxes(io, tmp.file("ckpt"), 40, 30, DType::float32, grid(40, 30, 3, 1), 100);
  auto reader = test::run_sync(io.runtime(), CheckpointReader::open(io.io(), dir));
  REQUIRE(reader);
  REQUIRE(test::run_sync(io.runtime(), (*reader)->open_files({"rank00000-000.safetensors"})));
  const File* file = (*reader)->file("rank00000-000.safetensors");
  REQUIRE(file);
  // Whether this file system takes O_DIRECT (ext4, xfs, tmpfs since Linux 6.6), asked directly.
  const int probe = ::open((dir + "/rank00000-000.safetensors").c_str(), O_RDONLY | O_DIRECT);
  CHECK(file->direct() == (probe >= 0));
  if (probe >= 0) ::close(probe);
  load_and_check(io, dir, 40, 30, DType::float64, grid(40, 30, 2, 2));

  TestIo buffered;
  auto real = buffered.swap_storage(nullptr);
  buffered.swap_storage(std::make_unique<BufferedOnlyStorage>(std::move(real)));
  load_and_check(buffered, dir, 40, 30, DType::float64, grid(40, 30, 2, 2));
  load_and_check(buffered, dir, 40, 30, DType::int64, grid(40, 30, 1, 3));
}
