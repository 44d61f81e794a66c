// Damaged checkpoints on a real disk: for each kind of damage, loading fails with an
// error that says what is wrong and names the file and, where one is involved, the
// tensor (never a crash, never wrong values), and verify_checkpoint reports a problem
// naming them. Damage a load does not depend on (a data file's safetensors header: the
// metadata is the authority, and every chunk's bytes are checksummed) leaves the load
// correct; verify reports it.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "corockpt/ckpt/checkpoint_reader.hpp"
#include "corockpt/ckpt/format/chunk_index.hpp"
#include "tests/ckpt/checkpoint_test_support.hpp"
#include "tests/ckpt/seed_spec.hpp"
#include "tests/support/hang_watchdog.hpp"
#include "tests/support/temp_dir.hpp"

using namespace corockpt;
using corockpt::test::TempDir;
using corockpt::test::TestIo;
using Json = nlohmann::json;

namespace {

const std::string metadata_name(checkpoint_metadata_file);
// A tensor with two chunks of 8 rows each: [8, 16] at [0, 0] and at [8, 0].
const std::string tensor = "net.0.weight";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

struct ChunkAt {
  std::string file;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

// Where a chunk of the metadata's JSON lies.
ChunkAt at(const Json& chunk) {
  return {chunk["file"].get<std::string>(), chunk["begin"].get<std::uint64_t>(), chunk["end"].get<std::uint64_t>()};
}

// A small checkpoint to damage: the seed saved per_param on 2 ranks. Loads run on 1
// rank (the flat layout), which reads every chunk.
class Damaged {
 public:
  Damaged() : dir_(tmp_.file("ckpt")) {
    test::save_on(io_, test::spec_of(test::seed_spec_json("per_param", 2, 2)), dir_);
  }

  TempDir& tmp() { return tmp_; }
  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  // The metadata as a format version 1/2 document: every tensor with every chunk (read
  // from the indexes of the version 3 checkpoint a save writes).
  Json metadata() {
    auto read = test::run_sync(io_.runtime(), read_checkpoint_metadata(io_.io(), dir_));
    REQUIRE(read);
    return Json::parse(to_json_text(*read));
  }
  // Replaces the checkpoint's metadata by `metadata`, a version 1/2 document (the indexes
  // stay, unread): damage to it is damage every reader of such checkpoints must catch.
  void set_metadata(const Json& metadata) const { write_file(path(metadata_name), metadata.dump()); }
  // The version 3 header alone, as written.
  CheckpointMetadata metadata_header() const {
    auto header = parse_checkpoint_metadata(read_file(path(metadata_name)));
    REQUIRE(header);
    REQUIRE(header->index);
    return *header;
  }

  // `name`'s chunk at rows offset `row` (from the metadata).
  ChunkAt chunk(const std::string& name, std::int64_t row) {
    const Json all = metadata();  // named: a range-for over a temporary's member would dangle
    for (const auto& c : all["tensors"][name]["chunks"]) {
      if (c["offsets"][0] == row) return at(c);
    }
    FAIL("no chunk of " << name << " at row " << row);
    return {};
  }

  // The chunk that ends last in `file`, and its tensor.
  std::pair<std::string, ChunkAt> last_chunk_in(const std::string& file) {
    std::pair<std::string, ChunkAt> last;
    const Json all = metadata();
    for (const auto& [name, record] : all["tensors"].items()) {
      for (const auto& c : record["chunks"]) {
        if (c["file"] == file && c["end"].get<std::uint64_t>() > last.second.end) {
          last = {name, at(c)};
        }
      }
    }
    REQUIRE(last.second.end > last.second.begin);
    return last;
  }

  // Loading fails on the one rank: its error.
  Error load_error() {
    auto loaded = test::load_on(io_, load_spec(), dir_);
    REQUIRE(loaded.size() == 1);
    INFO((loaded[0] ? "loaded: " + loaded[0]->mismatch : std::string()));
    REQUIRE_FALSE(loaded[0].has_value());
    return loaded[0].error();
  }

  // Loading succeeds with every value as saved.
  void check_loads_clean() {
    auto loaded = test::load_on(io_, load_spec(), dir_);
    REQUIRE(loaded.size() == 1);
    INFO((loaded[0] ? std::string() : loaded[0].error().to_string()));
    REQUIRE(loaded[0].has_value());
    CHECK(loaded[0]->mismatch == "");
    CHECK(loaded[0]->checked > 0);
  }

  VerifyReport verify() { return test::verify_on(io_, dir_); }
  Result<VerifyReport> try_verify() { return test::run_sync(io_.runtime(), verify_checkpoint(io_.io(), dir_)); }
  std::vector<Result<test::Loaded>> load() { return test::load_on(io_, load_spec(), dir_); }

 private:
  static ModelSpec load_spec() { return test::spec_of(test::seed_spec_json("flat", 1, 1)); }

  TempDir tmp_;
  TestIo io_;
  std::string dir_;
};

// `error` names each of `names` (in its message or its context).
void check_names(const Error& error, const std::vector<std::string>& names) {
  const std::string text = error.to_string();
  INFO(text);
  for (const auto& name : names) CHECK_THAT(text, Catch::Contains(name));
}

// Whether `report` has a problem about `file` and `tensor` whose message says `part`.
bool has_problem(const VerifyReport& report, const std::string& file, const std::string& tensor,
                 const std::string& part) {
  for (const auto& p : report.problems) {
    if (p.file == file && p.tensor == tensor && p.message.find(part) != std::string::npos) return true;
  }
  return false;
}

void check_problem(const VerifyReport& report, const std::string& file, const std::string& tensor,
                   const std::string& part) {
  INFO("expected [" << file << "] [" << tensor << "] ..." << part << "... among:\n" << test::problems_text(report));
  CHECK(has_problem(report, file, tensor, part));
}

// Writes `bytes` over `file`'s bytes from `at` on.
void overwrite(const std::string& file, std::uint64_t at, const std::string& bytes) {
  std::fstream f(file, std::ios::binary | std::ios::in | std::ios::out);
  f.seekp(static_cast<std::streamoff>(at));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

}  // namespace

TEST_CASE("Checkpoint corruption: a truncated data file") {
  Damaged ckpt;
  SECTION("its last chunk cut short") {
    const std::string file = ckpt.chunk(tensor, 0).file;
    const auto [name, chunk] = ckpt.last_chunk_in(file);
    std::filesystem::resize_file(ckpt.path(file), chunk.begin + (chunk.end - chunk.begin) / 2);

    const Error error = ckpt.load_error();
    CHECK(error.code == Errc::corrupt);
    CHECK(error.context.fqn == name);
    check_names(error, {file, name, "ends at byte"});

    check_problem(ckpt.verify(), file, "", "shorter than the metadata");
  }
  SECTION("cut in the middle of a chunk, losing the chunks after it") {
    const ChunkAt chunk = ckpt.chunk(tensor, 0);
    const std::uint64_t cut = chunk.begin + (chunk.end - chunk.begin) / 2;
    std::filesystem::resize_file(ckpt.path(chunk.file), cut);
    std::set<std::string> lost;  // tensors with a chunk in the file past the cut
    const Json metadata = ckpt.metadata();
    for (const auto& [name, record] : metadata["tensors"].items()) {
      for (const auto& c : record["chunks"]) {
        if (c["file"] == chunk.file && c["end"].get<std::uint64_t>() > cut) lost.insert(name);
      }
    }
    REQUIRE(lost.contains(tensor));

    const Error error = ckpt.load_error();
    CHECK(error.code == Errc::corrupt);
    INFO(error.to_string());
    CHECK(lost.contains(error.context.fqn));  // whichever read failed first
    check_names(error, {chunk.file, error.context.fqn, "ends at byte"});

    check_problem(ckpt.verify(), chunk.file, "", "shorter than the metadata");
  }
}

TEST_CASE("Checkpoint corruption: one flipped byte inside a chunk is a checksum mismatch naming the tensor") {
  Damaged ckpt;
  const ChunkAt chunk = ckpt.chunk(tensor, 8);
  const std::uint64_t at = chunk.begin + (chunk.end - chunk.begin) / 2 + 1;
  std::string bytes = read_file(ckpt.path(chunk.file));
  bytes[at] = static_cast<char>(bytes[at] ^ 0x10);
  write_file(ckpt.path(chunk.file), bytes);

  const Error error = ckpt.load_error();
  CHECK(error.code == Errc::corrupt);
  CHECK(error.context.fqn == tensor);
  check_names(error, {chunk.file, tensor, "checksum mismatch"});

  check_problem(ckpt.verify(), chunk.file, tensor, "checksum mismatch");
}

TEST_CASE("Checkpoint corruption: a missing data file") {
  Damaged ckpt;
  const std::string file = ckpt.chunk(tensor, 0).file;
  std::filesystem::remove(ckpt.path(file));

  const Error error = ckpt.load_error();
  CHECK(error.code == Errc::not_found);
  check_names(error, {file});

  check_problem(ckpt.verify(), file, "", "missing data file");
}

TEST_CASE("Checkpoint corruption: metadata naming a data file outside the checkpoint directory is refused") {
  for (const bool absolute : {false, true}) {
    for (const bool in_files : {false, true}) {
      Damaged ckpt;
      // A copy of the real data file where the bad name points: following it would "work".
      const std::string outside = absolute ? ckpt.tmp().file("abs-x") : ckpt.tmp().file("x");
      const std::string bad = absolute ? outside : "../x";
      const std::string file = ckpt.chunk(tensor, 0).file;
      std::filesystem::copy_file(ckpt.path(file), outside);
      INFO("the chunk's file is " << bad << (in_files ? ", in \"files\" too" : ", \"files\" unchanged"));

      Json metadata = ckpt.metadata();
      if (in_files) {
        metadata["files"][bad] = metadata["files"][file];
        metadata["files"].erase(file);
        for (auto& [name, record] : metadata["tensors"].items()) {
          for (auto& c : record["chunks"]) {
            if (c["file"] == file) c["file"] = bad;
          }
        }
      } else {
        for (auto& c : metadata["tensors"][tensor]["chunks"]) {
          if (c["file"] == file) c["file"] = bad;
        }
      }
      ckpt.set_metadata(metadata);

      const Error error = ckpt.load_error();
      CHECK(error.code == Errc::corrupt);
      check_names(error, {metadata_name, bad, "not a plain file name"});
      if (!in_files) CHECK(error.context.fqn == tensor);  // else "files" is rejected before any tensor is read

      check_problem(ckpt.verify(), metadata_name, in_files ? "" : tensor, bad);
    }
  }
}

TEST_CASE("Checkpoint corruption: a chunk byte range past the end of its file") {
  SECTION("end raised past the size in files") {
    Damaged ckpt;
    const std::string file = ckpt.chunk(tensor, 0).file;
    const auto [name, chunk] = ckpt.last_chunk_in(file);
    Json metadata = ckpt.metadata();
    for (auto& c : metadata["tensors"][name]["chunks"]) {
      if (c["file"] == file && c["end"] == chunk.end) c["end"] = chunk.end + 4;
    }
    ckpt.set_metadata(metadata);

    const Error error = ckpt.load_error();
    CHECK(error.code == Errc::corrupt);
    CHECK(error.context.fqn == name);
    check_names(error, {metadata_name, file, name, "past the end of file"});

    check_problem(ckpt.verify(), metadata_name, name, "past the end of file");
  }
  SECTION("range and size in files moved past the real end together") {
    Damaged ckpt;
    const ChunkAt chunk = ckpt.chunk(tensor, 8);
    Json metadata = ckpt.metadata();
    const auto size = metadata["files"][chunk.file].get<std::uint64_t>();
    const std::uint64_t begin = size + 64, end = begin + (chunk.end - chunk.begin);
    for (auto& c : metadata["tensors"][tensor]["chunks"]) {
      if (c["file"] == chunk.file) {
        c["begin"] = begin;
        c["end"] = end;
      }
    }
    metadata["files"][chunk.file] = end;
    ckpt.set_metadata(metadata);

    const Error error = ckpt.load_error();
    CHECK(error.code == Errc::corrupt);
    CHECK(error.context.fqn == tensor);
    check_names(error, {chunk.file, tensor, "ends at byte"});

    check_problem(ckpt.verify(), chunk.file, "", "shorter than the metadata");
  }
}

TEST_CASE("Checkpoint corruption: overlapping chunks") {
  Damaged ckpt;
  Json metadata = ckpt.metadata();
  bool moved = false;
  for (auto& c : metadata["tensors"][tensor]["chunks"]) {
    if (c["offsets"] == Json{8, 0}) {
      c["offsets"] = {4, 0};  // rows 4..12 overlap the first chunk's 0..8; rows 12..16 are left uncovered
      moved = true;
    }
  }
  REQUIRE(moved);
  ckpt.set_metadata(metadata);

  const Error error = ckpt.load_error();
  CHECK(error.code == Errc::corrupt);
  CHECK(error.context.fqn == tensor);
  check_names(error, {ckpt.dir(), tensor, "overlap"});

  check_problem(ckpt.verify(), "", tensor, "overlap");
}

TEST_CASE("Checkpoint corruption: a chunk box out of bounds") {
  Damaged ckpt;
  Json metadata = ckpt.metadata();
  for (auto& c : metadata["tensors"][tensor]["chunks"]) {
    if (c["offsets"] == Json{8, 0}) c["offsets"] = {12, 0};  // rows 12..20 of 16
  }
  ckpt.set_metadata(metadata);

  const Error error = ckpt.load_error();
  CHECK(error.code == Errc::corrupt);
  CHECK(error.context.fqn == tensor);
  check_names(error, {metadata_name, tensor, "leaves shape"});

  check_problem(ckpt.verify(), metadata_name, tensor, "leaves shape");
}

TEST_CASE("Checkpoint corruption: a safetensors header length larger than the file") {
  Damaged ckpt;
  const std::string file = ckpt.chunk(tensor, 0).file;
  const std::uint64_t length = std::filesystem::file_size(ckpt.path(file)) + 1000;
  std::string first8(8, '\0');
  for (int i = 0; i < 8; ++i) first8[i] = static_cast<char>((length >> (8 * i)) & 0xFF);
  overwrite(ckpt.path(file), 0, first8);

  ckpt.check_loads_clean();  // the metadata locates and checks every chunk; load reads no header
  check_problem(ckpt.verify(), file, "", "runs past the end of the file");
}

TEST_CASE("Checkpoint corruption: a data file header that is not JSON") {
  Damaged ckpt;
  const std::string file = ckpt.chunk(tensor, 0).file;
  overwrite(ckpt.path(file), 8, "this is not JSON");

  ckpt.check_loads_clean();
  check_problem(ckpt.verify(), file, "", "safetensors header");
}

TEST_CASE("Checkpoint corruption: an unknown dtype in the metadata") {
  Damaged ckpt;
  Json metadata = ckpt.metadata();
  metadata["tensors"][tensor]["dtype"] = "float33";
  ckpt.set_metadata(metadata);

  const Error error = ckpt.load_error();
  CHECK(error.code == Errc::corrupt);
  CHECK(error.context.fqn == tensor);
  check_names(error, {metadata_name, tensor, "float33"});

  check_problem(ckpt.verify(), metadata_name, tensor, "float33");
}

TEST_CASE("Checkpoint corruption: an unknown dtype in a data file header") {
  Damaged ckpt;
  const std::string file = ckpt.chunk(tensor, 0).file;
  std::string bytes = read_file(ckpt.path(file));
  const std::string entry = "\"" + tensor + "\":{\"dtype\":\"F32\"";
  const auto at = bytes.find(entry);
  REQUIRE(at != std::string::npos);
  bytes.replace(at + entry.size() - 4, 3, "Q32");
  write_file(ckpt.path(file), bytes);

  ckpt.check_loads_clean();
  check_problem(ckpt.verify(), file, tensor, "Q32");
}

TEST_CASE("Checkpoint corruption: metadata of a newer format version is unavailable") {
  Damaged ckpt;
  Json metadata = ckpt.metadata();
  metadata["version"] = checkpoint_format_version + 1;
  ckpt.set_metadata(metadata);

  const Error error = ckpt.load_error();
  CHECK(error.code == Errc::unavailable);
  check_names(error, {metadata_name, "newer corockpt"});

  check_problem(ckpt.verify(), metadata_name, "", "newer corockpt");
}

TEST_CASE("Checkpoint corruption: metadata that is not JSON") {
  Damaged ckpt;
  write_file(ckpt.path(metadata_name), R"({"format": "corockpt", "version": 1, "world_size": )");

  const Error error = ckpt.load_error();
  CHECK(error.code == Errc::corrupt);
  check_names(error, {metadata_name, "metadata"});

  check_problem(ckpt.verify(), metadata_name, "", "metadata");
}

TEST_CASE("Checkpoint corruption: a data file replaced by a directory") {
  Damaged ckpt;
  const std::string file = ckpt.chunk(tensor, 0).file;
  std::filesystem::remove(ckpt.path(file));
  std::filesystem::create_directory(ckpt.path(file));

  const Error error = ckpt.load_error();
  check_names(error, {file});
}

// A FIFO where a data file should be: opening it for reading would block until a writer
// came, and reading it would never end. Refused at the open, named.
TEST_CASE("Checkpoint corruption: a data file replaced by a FIFO is refused by load and verify without blocking") {
  Damaged ckpt;
  const std::string file = ckpt.chunk(tensor, 0).file;
  std::filesystem::remove(ckpt.path(file));
  REQUIRE(::mkfifo(ckpt.path(file).c_str(), 0644) == 0);
  test::HangWatchdog watchdog("load and verify of a checkpoint whose data file is a FIFO", std::chrono::seconds(60));

  const Error error = ckpt.load_error();
  CHECK(error.code == Errc::invalid_argument);
  check_names(error, {file, "a FIFO, not a regular file"});

  auto report = ckpt.try_verify();
  INFO((report ? std::string() : report.error().to_string()));
  REQUIRE(report.has_value());
  check_problem(*report, file, "", "a FIFO, not a regular file");
}

// Metadata that is a device (a symlink to /dev/zero would be read until memory runs out)
// or a FIFO (the open would block): refused at the open, named.
TEST_CASE("Checkpoint corruption: metadata that is /dev/zero or a FIFO is refused without reading or blocking") {
  Damaged ckpt;
  const std::string metadata = ckpt.path(metadata_name);
  std::filesystem::remove(metadata);
  test::HangWatchdog watchdog("load and verify of a checkpoint whose metadata is /dev/zero or a FIFO",
                              std::chrono::seconds(60));
  SECTION("a symlink to /dev/zero") {
    std::filesystem::create_symlink("/dev/zero", metadata);
    const Error error = ckpt.load_error();
    CHECK(error.code == Errc::invalid_argument);
    check_names(error, {metadata_name, "a character device, not a regular file"});
    check_problem(ckpt.verify(), metadata_name, "", "a character device, not a regular file");
  }
  SECTION("a FIFO") {
    REQUIRE(::mkfifo(metadata.c_str(), 0644) == 0);
    const Error error = ckpt.load_error();
    CHECK(error.code == Errc::invalid_argument);
    check_names(error, {metadata_name, "a FIFO, not a regular file"});
  }
}

// verify fails only when it cannot run: a data file it cannot read is a problem of that file.
TEST_CASE("Checkpoint corruption: verify reports a data file replaced by a directory") {
  Damaged ckpt;
  const std::string file = ckpt.chunk(tensor, 0).file;
  std::filesystem::remove(ckpt.path(file));
  std::filesystem::create_directory(ckpt.path(file));

  auto report = ckpt.try_verify();
  INFO((report ? std::string() : report.error().to_string()));
  REQUIRE(report.has_value());
  INFO(test::problems_text(*report));
  CHECK_FALSE(report->ok());
  CHECK(has_problem(*report, file, "", ""));
}

// A block_size near 2^64 (metadata that parses: one block per chunk) must not wrap the
// reader's rounding: the flipped byte is still found.
TEST_CASE("Checkpoint corruption: a flipped byte is found whatever the checksum block size") {
  Damaged ckpt;
  const ChunkAt chunk = ckpt.chunk(tensor, 8);
  const std::uint64_t at = chunk.begin + (chunk.end - chunk.begin) / 2 + 1;
  std::string bytes = read_file(ckpt.path(chunk.file));
  bytes[at] = static_cast<char>(bytes[at] ^ 0x10);
  write_file(ckpt.path(chunk.file), bytes);
  // Every chunk is smaller than one block either way: its one checksum stays right.
  Json metadata = ckpt.metadata();
  metadata["block_size"] = std::numeric_limits<std::uint64_t>::max();
  ckpt.set_metadata(metadata);

  const Error error = ckpt.load_error();
  CHECK(error.code == Errc::corrupt);
  check_names(error, {chunk.file, tensor});
  check_problem(ckpt.verify(), chunk.file, tensor, "checksum mismatch");
}

// A reader that trusts the metadata's file sizes needs the true one to tell a truncated
// copy from a damaged header: verify says both, whichever way they differ.
TEST_CASE("Checkpoint corruption: verify gives a data file's true size beside the size the metadata records") {
  Damaged ckpt;
  const std::string file = ckpt.chunk(tensor, 0).file;
  const std::uint64_t recorded = ckpt.metadata()["files"][file].get<std::uint64_t>();
  SECTION("truncated") {
    const std::uint64_t cut = recorded / 3;
    std::filesystem::resize_file(ckpt.path(file), cut);
    check_problem(ckpt.verify(), file, "",
                  "the file is " + std::to_string(cut) + " bytes, shorter than the metadata's " +
                      std::to_string(recorded));
  }
  SECTION("truncated to nothing") {
    std::filesystem::resize_file(ckpt.path(file), 0);
    check_problem(ckpt.verify(), file, "",
                  "the file is 0 bytes, shorter than the metadata's " + std::to_string(recorded));
  }
  SECTION("longer, by more than the probes' first steps") {
    const std::uint64_t longer = recorded + 100'003;
    std::filesystem::resize_file(ckpt.path(file), longer);
    check_problem(ckpt.verify(), file, "",
                  "the file is " + std::to_string(longer) + " bytes, longer than the metadata's " +
                      std::to_string(recorded));
  }
}

// Every mesh of the metadata is over ranks 0..world_size-1 (MeshSpec), so one whose shape
// holds another number of ranks, or whose dims a DeviceMesh could not name, contradicts
// the world it claims to describe. Load does not use the meshes (it reshards by boxes),
// so it still loads; verify reports it.
TEST_CASE("Checkpoint corruption: verify reports metadata meshes that contradict the world size") {
  Damaged ckpt;  // world 2: meshes global [2] and dp_ep [1, 2]
  Json metadata = ckpt.metadata();
  REQUIRE(metadata["world_size"] == 2);
  REQUIRE(metadata["meshes"].size() == 2);
  SECTION("fewer ranks than the world") {
    metadata["meshes"][0]["shape"] = {1};
    ckpt.set_metadata(metadata);
    check_problem(ckpt.verify(), metadata_name, "", "mesh \"global\" of shape [1] has 1 rank, but world_size is 2");
  }
  SECTION("more ranks than the world") {
    metadata["meshes"][1]["shape"] = {2, 2};
    ckpt.set_metadata(metadata);
    check_problem(ckpt.verify(), metadata_name, "", "mesh \"dp_ep\" of shape [2, 2] has 4 ranks, but world_size is 2");
  }
  SECTION("more ranks than 64 bits count") {
    metadata["meshes"][1]["shape"] = {std::int64_t{1} << 62, 1 << 20};
    ckpt.set_metadata(metadata);
    check_problem(ckpt.verify(), metadata_name, "", "has at least 2^63 ranks, but world_size is 2");
  }
  SECTION("a repeated dim name") {
    metadata["meshes"][1]["dim_names"] = {"dp", "dp"};
    ckpt.set_metadata(metadata);
    check_problem(ckpt.verify(), metadata_name, "", "mesh \"dp_ep\" repeats the dim name \"dp\"");
  }
  SECTION("no dims, or a dim without a name") {
    metadata["meshes"][0]["shape"] = Json::array();
    metadata["meshes"][0]["dim_names"] = Json::array();
    metadata["meshes"][1]["dim_names"] = {"dp", ""};
    ckpt.set_metadata(metadata);
    const VerifyReport report = ckpt.verify();
    check_problem(report, metadata_name, "", "mesh \"global\" has no dims");
    check_problem(report, metadata_name, "", "mesh \"global\" of shape [] has 1 rank, but world_size is 2");
    check_problem(report, metadata_name, "", "mesh \"dp_ep\" has a dim with an empty name");
  }
  SECTION("a repeated mesh name") {
    metadata["meshes"][1]["name"] = "global";
    metadata["meshes"][1]["shape"] = {2};
    metadata["meshes"][1]["dim_names"] = {"x"};
    ckpt.set_metadata(metadata);
    check_problem(ckpt.verify(), metadata_name, "", "the mesh name \"global\" is repeated");
  }
  ckpt.check_loads_clean();
}

// PyTorch's HuggingFaceStorageReader reads every *.safetensors file in the directory, so a
// file the metadata does not list changes what PyTorch loads (or makes it fail); other
// stray entries change nothing a reader sees and are left alone.
TEST_CASE("Checkpoint corruption: verify reports *.safetensors entries the metadata does not list") {
  Damaged ckpt;
  const std::string file = ckpt.chunk(tensor, 0).file;
  std::filesystem::copy_file(ckpt.path(file), ckpt.path("rank00007-000.safetensors"));
  std::filesystem::create_directory(ckpt.path("extra.safetensors"));
  write_file(ckpt.path("notes.txt"), "kept beside the checkpoint");
  write_file(ckpt.path("model.safetensors.index.json"), "{}");

  const VerifyReport report = ckpt.verify();
  INFO(test::problems_text(report));
  check_problem(report, "rank00007-000.safetensors", "", "not listed in the metadata");
  check_problem(report, "extra.safetensors", "", "not listed in the metadata");
  CHECK(report.problems.size() == 2);  // notes.txt and the index are not problems
  CHECK(report.files == ckpt.metadata()["files"].size());
}

TEST_CASE("Checkpoint corruption: metadata with a user blob over its bound is refused by load and verify, naming it") {
  Damaged ckpt;
  Json metadata = ckpt.metadata();
  metadata["user"] = {{"data_loader", std::string(2 * max_user_blob_bytes, 'x')}};  // 32 MiB of text
  ckpt.set_metadata(metadata);
  const Error error = ckpt.load_error();
  CHECK(error.code == Errc::corrupt);
  check_names(error, {metadata_name, "\"user\" holds more than 16777216 bytes of text"});
  check_problem(ckpt.verify(), metadata_name, "", "\"user\" holds more than 16777216 bytes of text");
}

// --- format version 3: the tensor index and the rank indexes ----------------------------

TEST_CASE("Checkpoint corruption: a damaged, missing or foreign index is refused by load and verify, naming it") {
  Damaged ckpt;
  const std::string rank1 = rank_index_file_name(1);
  SECTION("a flipped byte in a rank's index") {
    const std::string path = ckpt.path(rank1);
    overwrite(path, std::filesystem::file_size(path) / 2, std::string(1, read_file(path)[std::filesystem::file_size(path) / 2] ^ 0x20));
    check_names(ckpt.load_error(), {rank1, "checksum mismatch"});
    check_problem(ckpt.verify(), rank1, "", "checksum mismatch");
  }
  SECTION("a rank's index missing") {
    std::filesystem::remove(ckpt.path(rank1));
    const Error error = ckpt.load_error();
    CHECK(error.code == Errc::not_found);
    check_names(error, {rank1});
    check_problem(ckpt.verify(), rank1, "", "");
  }
  SECTION("a rank's index from another save of the same model") {
    TempDir other;
    TestIo io;
    const std::string second = other.file("ckpt");
    test::save_on(io, test::spec_of(test::seed_spec_json("per_param", 2, 2)), second);
    std::filesystem::copy_file(second + "/" + rank1, ckpt.path(rank1), std::filesystem::copy_options::overwrite_existing);
    check_names(ckpt.load_error(), {rank1, "of this checkpoint's save"});
    check_problem(ckpt.verify(), rank1, "", "of this checkpoint's save");
  }
  SECTION("a flipped byte in the tensor index") {
    const std::string path = ckpt.path(std::string(tensor_index_file));
    overwrite(path, 30, std::string(1, read_file(path)[30] ^ 0x01));
    check_names(ckpt.load_error(), {std::string(tensor_index_file), "checksum mismatch"});
    check_problem(ckpt.verify(), std::string(tensor_index_file), "", "checksum mismatch");
  }
  SECTION("the tensor index cut short") {
    const std::string path = ckpt.path(std::string(tensor_index_file));
    std::filesystem::resize_file(path, std::filesystem::file_size(path) - 3);
    check_names(ckpt.load_error(), {std::string(tensor_index_file), "the metadata says"});
  }
  SECTION("a chunk the tensor index says a rank wrote, missing from that rank's index") {
    const std::string path = ckpt.path(rank1);
    auto index = decode_rank_index(read_file(path), 1, ckpt.metadata_header().index->save_id,
                                   ckpt.metadata_header().block_size, path);
    REQUIRE(index);
    auto lost = std::ranges::find(index->chunks, name_hash(tensor), &RankIndex::Chunk::name_hash);
    REQUIRE(lost != index->chunks.end());
    index->chunks.erase(lost);
    write_file(path, encode_rank_index(std::move(*index)));
    check_names(ckpt.load_error(), {rank1, tensor, "does not list it"});
    check_problem(ckpt.verify(), rank1, tensor, "does not list it");
  }
}

TEST_CASE("Checkpoint corruption: a load reads the tensor index and only the indexes of the ranks it reads from") {
  Damaged ckpt;
  // Rows 0..7 of the tensor lie in rank 0's chunk: with rank 1's index gone, a load of
  // only those rows still succeeds, and a load of rows 8.. fails naming the index.
  std::filesystem::remove(ckpt.path(rank_index_file_name(1)));
  TestIo io;
  std::vector<float> values(8 * 16);
  auto target = [&](std::int64_t row) {
    return LocalChunk{.name = tensor, .dtype = DType::float32, .shape = {16, 16}, .box = Box{{row, 0}, {8, 16}},
                      .bytes = std::as_writable_bytes(std::span(values)), .writer = true};
  };
  std::vector<LocalChunk> top{target(0)}, bottom{target(8)};
  auto read = test::run_sync(io.runtime(), load_chunks(top, io.io(), ckpt.dir()));
  INFO((read ? std::string() : read.error().to_string()));
  CHECK(read);
  auto reader = test::run_sync(io.runtime(), CheckpointReader::open_for(io.io(), ckpt.dir(), top));
  REQUIRE(reader);
  CHECK((*reader)->metadata().partial);
  CHECK((*reader)->metadata().tensors.size() == 1);
  auto missing = test::run_sync(io.runtime(), load_chunks(bottom, io.io(), ckpt.dir()));
  REQUIRE_FALSE(missing);
  CHECK(missing.error().to_string().find(rank_index_file_name(1)) != std::string::npos);
}

TEST_CASE("Checkpoint corruption: a checkpoint of format version 2 (all of its metadata in JSON) loads and verifies") {
  Damaged ckpt;
  ckpt.set_metadata(ckpt.metadata());  // every tensor and chunk written into the JSON
  for (const auto& entry : std::filesystem::directory_iterator(ckpt.dir())) {
    if (entry.path().filename().string().ends_with(".bin") && !entry.path().filename().string().ends_with("objects.bin")) {
      std::filesystem::remove(entry.path());  // the indexes: a version 2 checkpoint has none
    }
  }
  ckpt.check_loads_clean();
  const VerifyReport report = ckpt.verify();
  INFO(test::problems_text(report));
  CHECK(report.ok());
}
