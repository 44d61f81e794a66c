#include "tests/support/power_cut_storage.hpp"

#include <catch2/catch.hpp>

#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "corockpt/runtime/runtime.hpp"
#include "tests/support/run_sync.hpp"

using namespace corockpt;
using corockpt::test::PowerCutStorage;
using corockpt::test::run_sync;

namespace {

template <class T>
void require_ok(const Result<T>& r) {
  if (!r) FAIL(r.error().to_string());
}

template <class T>
void require_error(const Result<T>& r, Errc code) {
  REQUIRE_FALSE(r.has_value());
  INFO(r.error().to_string());
  CHECK(r.error().code == code);
}

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

// Opens `path` with `mode`, writes `content` at 0 and, if asked, fsyncs it.
Task<void> write_file(Storage& storage, std::string path, std::string content, OpenMode mode, bool sync) {
  auto file = co_await storage.open(path, {.mode = mode, .direct = DirectIo::prefer});
  if (!file) co_return fail(file.error());
  if (auto ok = co_await storage.write_at(*file, 0, bytes_of(content)); !ok) co_return ok;
  if (!sync) co_return Result<void>{};
  co_return co_await storage.fsync(*file);
}

// Reads the whole file through the Storage interface.
Task<std::string> read_whole(Storage& storage, std::string path) {
  auto file = co_await storage.open(path, {.mode = OpenMode::read, .direct = DirectIo::never});
  if (!file) co_return fail(file.error());
  std::string out(64, '\0');
  auto n = co_await storage.read_at(*file, 0, std::as_writable_bytes(std::span(out.data(), out.size())));
  if (!n) co_return fail(n.error());
  out.resize(*n);
  co_return out;
}

// The atomic-replace pattern: write a temporary, fsync it, rename it over the target,
// fsync the directory. Five mutations: open, write_at, fsync, rename, fsync_dir.
Task<void> replace_atomically(Storage& storage, std::string path, std::string content) {
  const std::string tmp = path + ".tmp";
  if (auto ok = co_await write_file(storage, tmp, content, OpenMode::create, true); !ok) co_return ok;
  if (auto ok = co_await storage.rename(tmp, path); !ok) co_return ok;
  co_return co_await storage.fsync_dir("/");
}

// Opens a file, writes through it after renaming it, and fsyncs it.
Task<void> write_after_rename(Storage& storage) {
  auto file = co_await storage.open("/a", {.mode = OpenMode::create, .direct = DirectIo::prefer});
  if (!file) co_return fail(file.error());
  if (auto ok = co_await storage.rename("/a", "/b"); !ok) co_return ok;
  if (auto ok = co_await storage.write_at(*file, 0, bytes_of(std::string("moved"))); !ok) co_return ok;
  co_return co_await storage.fsync(*file);
}

Task<File> open_file(Storage& storage, std::string path, OpenMode mode) {
  co_return co_await storage.open(path, {.mode = mode, .direct = DirectIo::prefer});
}

Task<void> write_to(Storage& storage, File& file, std::uint64_t offset, std::string content) {
  co_return co_await storage.write_at(file, offset, bytes_of(content));
}

Task<std::string> read_range(Storage& storage, File& file, std::uint64_t offset, std::size_t length) {
  std::string out(length, '\0');
  auto n = co_await storage.read_at(file, offset, std::as_writable_bytes(std::span(out.data(), out.size())));
  if (!n) co_return fail(n.error());
  out.resize(*n);
  co_return out;
}

// One simulated rank: its own directory with a durable file in it.
Task<void> rank_save(Storage& storage, int rank) {
  const std::string dir = "/ranks/" + std::to_string(rank);
  if (auto ok = co_await storage.make_dir(dir); !ok) co_return ok;
  for (int i = 0; i < 4; ++i) {
    auto ok = co_await write_file(storage, dir + "/part" + std::to_string(i), "rank" + std::to_string(rank),
                                  OpenMode::create, true);
    if (!ok) co_return ok;
  }
  co_return co_await storage.fsync_dir(dir);
}

std::size_t open_fd_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

}  // namespace

TEST_CASE("power cut drops what was written but not fsynced", "[power_cut_storage]") {
  Runtime rt({.worker_threads = 1});
  PowerCutStorage s;
  REQUIRE(s.name() == "power_cut");

  // Entry durable, data never fsynced: the file survives empty.
  require_ok(run_sync(rt, write_file(s, "/empty", "lost", OpenMode::create, false)));
  // Data fsynced, then more written (and the size grown) without another fsync.
  require_ok(run_sync(rt, write_file(s, "/kept", "first", OpenMode::create, true)));
  require_ok(run_sync(rt, write_file(s, "/kept", "SECOND, longer", OpenMode::read_write, false)));
  require_ok(run_sync(rt, s.fsync_dir("/")));
  REQUIRE(s.read_file("/empty") == "lost");
  REQUIRE(s.read_file("/kept") == "SECOND, longer");

  s.power_cut();
  REQUIRE(s.power_cuts() == 1);
  REQUIRE(s.read_file("/empty").empty());
  REQUIRE(s.read_file("/kept") == "first");
  auto back = run_sync(rt, read_whole(s, "/kept"));
  require_ok(back);
  REQUIRE(*back == "first");
  REQUIRE(s.list_tree() == std::vector<std::string>{"/empty", "/kept"});
}

TEST_CASE("fsynced data survives only if its directory entry was fsync_dir'd", "[power_cut_storage]") {
  Runtime rt({.worker_threads = 1});
  PowerCutStorage s;
  require_ok(run_sync(rt, s.make_dir("/d")));
  require_ok(run_sync(rt, s.make_dir("/d/sub")));
  require_ok(run_sync(rt, write_file(s, "/d/synced_entry", "a", OpenMode::create, true)));
  require_ok(run_sync(rt, s.fsync_dir("/d")));
  require_ok(run_sync(rt, write_file(s, "/d/no_entry", "b", OpenMode::create, true)));  // after the fsync_dir
  require_ok(run_sync(rt, write_file(s, "/d/sub/kept", "c", OpenMode::create, true)));
  require_ok(run_sync(rt, s.fsync_dir("/d/sub")));  // /d's durable copy already names sub

  SECTION("a parent never fsync_dir'd loses the whole subtree") {
    REQUIRE(s.durable_tree().empty());
    s.power_cut();
    REQUIRE(s.list_tree().empty());
    REQUIRE_FALSE(s.exists("/d"));
    require_error(run_sync(rt, s.list("/d")), Errc::not_found);
    require_error(run_sync(rt, read_whole(s, "/d/synced_entry")), Errc::not_found);
    REQUIRE(s.exists("/"));
    REQUIRE(s.is_directory("/"));
  }
  SECTION("with the root fsync_dir'd, exactly the durable entries survive") {
    require_ok(run_sync(rt, s.fsync_dir("/")));
    const std::vector<std::string> expected{"/d/", "/d/sub/", "/d/sub/kept", "/d/synced_entry"};
    REQUIRE(s.durable_tree() == expected);
    s.power_cut();
    REQUIRE(s.list_tree() == expected);
    REQUIRE(s.read_file("/d/synced_entry") == "a");
    REQUIRE_FALSE(s.exists("/d/no_entry"));
    REQUIRE(s.read_file("/d/sub/kept") == "c");
  }
}

TEST_CASE("a rename not followed by fsync_dir of the parent is undone", "[power_cut_storage]") {
  Runtime rt({.worker_threads = 1});
  PowerCutStorage s;
  s.put_file("/ckpt/latest", "old");
  REQUIRE(s.durable_tree() == std::vector<std::string>{"/ckpt/", "/ckpt/latest"});

  require_ok(run_sync(rt, write_file(s, "/ckpt/latest.tmp", "new", OpenMode::create, true)));
  require_ok(run_sync(rt, s.fsync_dir("/ckpt")));  // the temporary's entry is durable
  require_ok(run_sync(rt, s.rename("/ckpt/latest.tmp", "/ckpt/latest")));
  REQUIRE(s.read_file("/ckpt/latest") == "new");
  REQUIRE_FALSE(s.exists("/ckpt/latest.tmp"));

  SECTION("without fsync_dir") {
    s.power_cut();
    REQUIRE(s.read_file("/ckpt/latest") == "old");
    REQUIRE(s.read_file("/ckpt/latest.tmp") == "new");
  }
  SECTION("with fsync_dir") {
    require_ok(run_sync(rt, s.fsync_dir("ckpt/")));  // relative, trailing slash
    s.power_cut();
    REQUIRE(s.read_file("/ckpt/latest") == "new");
    REQUIRE_FALSE(s.exists("/ckpt/latest.tmp"));
  }
  SECTION("a directory moved between parents needs both of them fsync_dir'd") {
    require_ok(run_sync(rt, s.make_dir("/other")));
    require_ok(run_sync(rt, s.fsync_dir("/")));
    require_ok(run_sync(rt, s.fsync_dir("/ckpt")));
    require_ok(run_sync(rt, s.rename("/ckpt", "/other/ckpt")));
    require_ok(run_sync(rt, s.fsync_dir("/other")));
    // "/" still lists ckpt durably and /other lists it too: both names reach the inode.
    s.power_cut();
    REQUIRE(s.read_file("/other/ckpt/latest") == "new");
    REQUIRE(s.read_file("/ckpt/latest") == "new");
  }
}

TEST_CASE("fail_from fails the n-th mutation and every later one", "[power_cut_storage]") {
  Runtime rt({.worker_threads = 1});
  const std::vector<std::string> ops{"open", "write_at", "fsync", "rename", "fsync_dir"};

  // A clean run counts the mutations.
  std::uint64_t count = 0;
  {
    PowerCutStorage s;
    s.put_file("/state", "old");
    const auto before = s.mutations();
    require_ok(run_sync(rt, replace_atomically(s, "/state", "new")));
    count = s.mutations() - before;
    REQUIRE(s.injected_failures() == 0);
  }
  REQUIRE(count == ops.size());

  for (std::uint64_t n = 0; n <= count; ++n) {
    INFO("fail_from(" << n << ")");
    PowerCutStorage s;
    s.put_file("/state", "old");
    s.fail_from(n);
    auto saved = run_sync(rt, replace_atomically(s, "/state", "new"));
    if (n < count) {
      require_error(saved, Errc::io);
      CHECK(saved.error().context.operation == ops[n]);
      CHECK(saved.error().message.find("simulated power cut") != std::string::npos);
      CHECK(s.mutations() == n + 1);
      CHECK(s.injected_failures() == 1);
      // Every later mutation fails too ...
      require_error(run_sync(rt, s.make_dir("/later")), Errc::io);
      require_error(run_sync(rt, write_file(s, "/later", "x", OpenMode::truncate, false)), Errc::io);
      require_error(run_sync(rt, s.remove("/state")), Errc::io);
      CHECK(s.injected_failures() == 4);
      // ... while reads, list and opening existing files keep working.
      auto list = run_sync(rt, s.list("/"));
      require_ok(list);
      CHECK_FALSE(list->empty());
      auto old = run_sync(rt, read_whole(s, "/state"));
      require_ok(old);
      CHECK(*old == (n > 3 ? "new" : "old"));  // the rename (#3) ran when n > 3
      require_ok(run_sync(rt, open_file(s, "/state", OpenMode::read_write)));
    } else {
      require_ok(saved);
    }
    s.power_cut();  // the machine comes back: faults are gone
    CHECK(s.read_file("/state") == (n == count ? "new" : "old"));
    CHECK(s.list_tree() == std::vector<std::string>{"/state"});
    require_ok(run_sync(rt, replace_atomically(s, "/state", "again")));
    s.power_cut();
    CHECK(s.read_file("/state") == "again");
  }

  SECTION("fail_from counts from the call and reset_faults disarms it") {
    PowerCutStorage s;
    require_ok(run_sync(rt, s.make_dir("/a")));
    require_ok(run_sync(rt, s.make_dir("/b")));
    s.fail_from(1);
    require_ok(run_sync(rt, s.make_dir("/c")));
    require_error(run_sync(rt, s.make_dir("/d")), Errc::io);
    REQUIRE_FALSE(s.exists("/d"));
    REQUIRE(s.mutations() == 4);
    s.reset_faults();
    require_ok(run_sync(rt, s.make_dir("/d")));
    s.fail_from(0);
    require_error(run_sync(rt, s.fsync_dir("/")), Errc::io);
    // Opening for read/read_write is not a mutation and is not counted.
    s.put_file("/f", "x");
    require_ok(run_sync(rt, open_file(s, "/f", OpenMode::read)));
    require_ok(run_sync(rt, open_file(s, "/f", OpenMode::read_write)));
    REQUIRE(s.mutations() == 6);
  }
}

TEST_CASE("list returns entries sorted by name with their kind", "[power_cut_storage]") {
  Runtime rt({.worker_threads = 1});
  PowerCutStorage s;
  require_error(run_sync(rt, write_file(s, "/dir/a", "x", OpenMode::create, false)), Errc::not_found);
  require_error(run_sync(rt, s.list("/dir")), Errc::not_found);
  require_ok(run_sync(rt, s.make_dir("/dir")));
  for (const char* name : {"zeta", "Alpha", "b.data", "a"}) {
    require_ok(run_sync(rt, write_file(s, std::string("/dir//") + name, "x", OpenMode::create, false)));
  }
  require_ok(run_sync(rt, s.make_dir("dir/mid/")));
  auto list = run_sync(rt, s.list("/dir/"));
  require_ok(list);
  REQUIRE(list->size() == 5);
  const std::vector<std::string> names{"Alpha", "a", "b.data", "mid", "zeta"};
  for (std::size_t i = 0; i < names.size(); ++i) {
    CHECK((*list)[i].name == names[i]);
    CHECK((*list)[i].is_directory == (names[i] == "mid"));
  }
  REQUIRE(run_sync(rt, s.list("/dir/mid"))->empty());
  require_error(run_sync(rt, s.list("/dir/a")), Errc::not_found);
  REQUIRE(s.list_tree() ==
          std::vector<std::string>{"/dir/", "/dir/Alpha", "/dir/a", "/dir/b.data", "/dir/mid/", "/dir/zeta"});
}

TEST_CASE("PowerCutStorage matches the real plugins on errors and file semantics", "[power_cut_storage]") {
  Runtime rt({.worker_threads = 1});
  PowerCutStorage s;
  require_ok(run_sync(rt, write_file(s, "/f", "hello world", OpenMode::create, false)));

  // open
  require_error(run_sync(rt, open_file(s, "/f", OpenMode::create)), Errc::already_exists);
  require_error(run_sync(rt, open_file(s, "/missing", OpenMode::read)), Errc::not_found);
  require_error(run_sync(rt, open_file(s, "/missing", OpenMode::read_write)), Errc::not_found);
  require_error(run_sync(rt, open_file(s, "/no/dir/f", OpenMode::create)), Errc::not_found);
  require_error(run_sync(rt, open_file(s, "/f/under_a_file", OpenMode::create)), Errc::not_found);
  require_error(run_sync(rt, open_file(s, "/", OpenMode::read)), Errc::invalid_argument);
  {
    auto file = run_sync(rt, open_file(s, "/f", OpenMode::read));
    require_ok(file);
    CHECK_FALSE(file->direct());
    CHECK(file->offset_alignment() == 1);
    CHECK(file->memory_alignment() == 1);
    CHECK(file->path() == "/f");
    require_error(run_sync(rt, write_to(s, *file, 0, "x")), Errc::invalid_argument);  // read-only
  }

  // make_dir
  require_ok(run_sync(rt, s.make_dir("/d")));
  require_error(run_sync(rt, s.make_dir("/d")), Errc::already_exists);
  require_error(run_sync(rt, s.make_dir("/f")), Errc::already_exists);
  require_error(run_sync(rt, s.make_dir("/x/y")), Errc::not_found);

  // read_at, write_at, truncate, allocate
  {
    auto file = run_sync(rt, open_file(s, "/g", OpenMode::truncate));
    require_ok(file);
    require_ok(run_sync(rt, write_to(s, *file, 4, "tail")));  // a gap reads as zeros
    CHECK(s.read_file("/g") == std::string("\0\0\0\0tail", 8));
    auto part = run_sync(rt, read_range(s, *file, 6, 100));  // up to EOF
    require_ok(part);
    CHECK(*part == "il");
    CHECK(run_sync(rt, read_range(s, *file, 100, 10))->empty());
    require_ok(run_sync(rt, s.allocate(*file, 12)));
    CHECK(s.read_file("/g").size() == 12);
    require_ok(run_sync(rt, s.allocate(*file, 3)));  // never shrinks
    CHECK(s.read_file("/g").size() == 12);
    require_ok(run_sync(rt, s.truncate(*file, 5)));
    CHECK(s.read_file("/g") == std::string("\0\0\0\0t", 5));
    require_ok(run_sync(rt, s.truncate(*file, 7)));
    CHECK(s.read_file("/g") == std::string("\0\0\0\0t\0\0", 7));
  }
  {
    auto again = run_sync(rt, open_file(s, "/g", OpenMode::truncate));  // truncate empties it
    require_ok(again);
    CHECK(s.read_file("/g").empty());
  }

  // rename
  require_ok(run_sync(rt, s.make_dir("/d/inner")));
  require_ok(run_sync(rt, s.make_dir("/empty")));
  require_error(run_sync(rt, s.rename("/missing", "/x")), Errc::not_found);
  require_error(run_sync(rt, s.rename("/f", "/nowhere/x")), Errc::not_found);
  require_error(run_sync(rt, s.rename("/empty", "/d")), Errc::already_exists);  // non-empty target
  require_error(run_sync(rt, s.rename("/f", "/empty")), Errc::invalid_argument);  // a file over a directory
  require_error(run_sync(rt, s.rename("/d", "/d/inner/d")), Errc::invalid_argument);
  require_ok(run_sync(rt, s.rename("/f", "/f")));
  require_ok(run_sync(rt, s.rename("/d", "/empty")));  // a directory over an empty one
  CHECK(s.is_directory("/empty/inner"));
  CHECK_FALSE(s.exists("/d"));
  require_ok(run_sync(rt, s.rename("/f", "/g")));  // a file over a file
  CHECK(s.read_file("/g") == "hello world");
  CHECK_FALSE(s.exists("/f"));

  // remove
  require_error(run_sync(rt, s.remove("/empty")), Errc::already_exists);  // not empty
  require_ok(run_sync(rt, s.remove("/empty/inner")));
  require_ok(run_sync(rt, s.remove("/empty")));
  require_ok(run_sync(rt, s.remove("/g")));
  require_error(run_sync(rt, s.remove("/g")), Errc::not_found);
  require_error(run_sync(rt, s.remove("/")), Errc::invalid_argument);
  require_error(run_sync(rt, s.fsync_dir("/g")), Errc::not_found);
  CHECK(s.list_tree().empty());

  // path normalisation
  require_ok(run_sync(rt, s.make_dir("a")));
  require_ok(run_sync(rt, write_file(s, "a//./b/../c/", "n", OpenMode::create, false)));
  CHECK(s.read_file("/a/c") == "n");
  CHECK_THROWS(s.read_file("/a/missing"));
  CHECK_THROWS(s.read_file("/a"));
}

TEST_CASE("PowerCutStorage files follow their inode and close their descriptors", "[power_cut_storage]") {
  Runtime rt({.worker_threads = 1});
  const auto fds_before = open_fd_count();
  {
    PowerCutStorage s;
    require_ok(run_sync(rt, write_after_rename(s)));
    CHECK(s.read_file("/b") == "moved");
    CHECK_FALSE(s.exists("/a"));

    std::vector<File> files;
    for (int i = 0; i < 16; ++i) {
      auto f = run_sync(rt, open_file(s, "/f" + std::to_string(i), OpenMode::create));
      require_ok(f);
      files.push_back(std::move(*f));
    }
    CHECK(open_fd_count() == fds_before + 16);

    // A handle from before a power cut is dead afterwards.
    require_ok(run_sync(rt, s.fsync_dir("/")));
    s.power_cut();
    require_error(run_sync(rt, write_to(s, files[0], 0, "x")), Errc::io);
    require_error(run_sync(rt, s.fsync(files[0])), Errc::io);
    files[0].close();
    require_error(run_sync(rt, s.fsync(files[0])), Errc::invalid_argument);
    auto reopened = run_sync(rt, open_file(s, "/f0", OpenMode::read_write));
    require_ok(reopened);
    require_ok(run_sync(rt, write_to(s, *reopened, 0, "ok")));
    CHECK(s.read_file("/f0") == "ok");
  }
  CHECK(open_fd_count() == fds_before);
}

TEST_CASE("PowerCutStorage serves eight ranks on strands of one io_context", "[power_cut_storage]") {
  Runtime rt({.worker_threads = 1});
  PowerCutStorage s;
  require_ok(run_sync(rt, s.make_dir("/ranks")));
  std::vector<TaskHandle<void>> handles;
  for (int r = 0; r < 8; ++r) handles.push_back(rt.spawn(rt.make_strand(), rank_save(s, r)));
  for (auto& h : handles) require_ok(h.get());
  require_ok(run_sync(rt, s.fsync_dir("/ranks")));
  require_ok(run_sync(rt, s.fsync_dir("/")));
  CHECK(s.mutations() == 1 + 8 * (1 + 4 * 3 + 1) + 2);
  s.power_cut();
  CHECK(s.list_tree().size() == 1 + 8 * 5);
  for (int r = 0; r < 8; ++r) CHECK(s.read_file("/ranks/" + std::to_string(r) + "/part3") == "rank" + std::to_string(r));
}
