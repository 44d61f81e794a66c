#include "corockpt/plugins/storage/storage.hpp"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

#include "bench/bench_support.hpp"  // fill_random: the benchmarks' random bytes (inline, no library)
#include "corockpt/plugins/storage/make_storage.hpp"
#include "corockpt/runtime/buffer_pool.hpp"
#include "corockpt/runtime/when_all.hpp"
#include "tests/support/run_sync.hpp"
#include "tests/support/skip.hpp"
#include "tests/support/temp_dir.hpp"

using namespace corockpt;
using bench::fill_random;

namespace {

// Every test runs against both plugins.
std::unique_ptr<Storage> make(Runtime& rt, const std::string& kind) {
  auto storage = make_storage(rt, parse_storage_kind(kind).value(), {.queue_depth = 32});
  REQUIRE(storage);
  return std::move(*storage);
}

// The directory of a test that needs O_DIRECT to work (or to be refused), probed rather
// than assumed: /tmp is ext4 on some machines and tmpfs (which may refuse it) on others.
std::optional<std::filesystem::path> direct_io_dir(bool direct) { return test::dir_where_o_direct(direct); }
constexpr const char* no_direct_dir =
    "no writable directory here (TMPDIR, /tmp, /var/tmp, /dev/shm, the working directory) takes O_DIRECT";
constexpr const char* no_buffered_only_dir =
    "every writable directory here (TMPDIR, /tmp, /var/tmp, /dev/shm, the working directory) takes O_DIRECT, "
    "so the fallback to buffered I/O cannot be exercised";

// Page-aligned memory (what O_DIRECT needs), for fill_random's reproducible stream.
struct AlignedBytes {
  explicit AlignedBytes(std::size_t n)
      : data(static_cast<std::byte*>(std::aligned_alloc(4096, n)), &std::free), size(n) {}
  std::unique_ptr<std::byte, decltype(&std::free)> data;
  std::size_t size;
  std::span<std::byte> span() const { return {data.get(), size}; }
};

// Writes `files` files of `file_bytes` each, in `chunk`-sized writes all in flight at
// once, fsyncs them, reads everything back and compares byte for byte.
Task<void> round_trip(Storage& storage, std::string dir, DirectIo direct, std::size_t files, std::size_t file_bytes,
                      std::size_t chunk, std::span<const std::byte> source, bool* all_direct) {
  std::vector<File> handles;
  for (std::size_t f = 0; f < files; ++f) {
    auto file = co_await storage.open(dir + "/data_" + std::to_string(f), {OpenMode::create, direct});
    if (!file) co_return fail(file.error());
    *all_direct = *all_direct && file->direct();
    handles.push_back(std::move(*file));
  }
  std::vector<Task<void>> writes;
  for (std::size_t f = 0; f < files; ++f) {
    for (std::size_t off = 0; off < file_bytes; off += chunk) {
      writes.push_back(storage.write_at(handles[f], off, source.subspan(f * file_bytes + off, chunk)));
    }
  }
  if (auto ok = all_ok(co_await when_all(std::move(writes))); !ok) co_return ok;
  std::vector<Task<void>> syncs;
  for (auto& h : handles) syncs.push_back(storage.fsync(h));
  if (auto ok = all_ok(co_await when_all(std::move(syncs))); !ok) co_return ok;

  AlignedBytes back(file_bytes);
  for (std::size_t f = 0; f < files; ++f) {
    std::memset(back.data.get(), 0, file_bytes);
    std::vector<Task<std::size_t>> reads;
    for (std::size_t off = 0; off < file_bytes; off += chunk) {
      reads.push_back(storage.read_at(handles[f], off, back.span().subspan(off, chunk)));
    }
    auto got = all_ok(co_await when_all(std::move(reads)));
    if (!got) co_return fail(got.error());
    for (auto n : *got) {
      if (n != chunk) co_return fail(Errc::io, "short read in round trip");
    }
    if (std::memcmp(back.data.get(), source.data() + f * file_bytes, file_bytes) != 0) {
      co_return fail(Errc::corrupt, "file " + std::to_string(f) + " differs from what was written");
    }
  }
  co_return Result<void>{};
}

}  // namespace

TEST_CASE("storage - 256 MiB of random bytes round-trip across many files, O_DIRECT and buffered", "[storage]") {
  auto kind = GENERATE(std::string("uring"), std::string("posix"));
  auto direct = GENERATE(DirectIo::prefer, DirectIo::never);
  CAPTURE(kind, direct == DirectIo::prefer ? "direct" : "buffered");
  const auto parent = direct_io_dir(true);
  if (!parent) COROCKPT_SKIP(no_direct_dir);
  Runtime rt;
  auto storage = make(rt, kind);
  CHECK(storage->name() == kind);
  test::TempDir dir(*parent);

  constexpr std::size_t files = 16, file_bytes = 16 << 20, chunk = 1 << 20;
  AlignedBytes source(files * file_bytes);
  fill_random(source.span(), 42);
  bool all_direct = true;
  auto r = test::run_sync(
      rt, round_trip(*storage, dir.path().string(), direct, files, file_bytes, chunk, source.span(), &all_direct));
  INFO((r ? std::string() : r.error().to_string()));
  REQUIRE(r);
  if (direct == DirectIo::never) CHECK_FALSE(all_direct);
  if (direct == DirectIo::prefer) CHECK(all_direct);  // the directory was chosen for taking O_DIRECT
}

TEST_CASE("storage - a file system that refuses O_DIRECT falls back to buffered I/O and round-trips", "[storage]") {
  auto kind = GENERATE(std::string("uring"), std::string("posix"));
  CAPTURE(kind);
  const auto parent = direct_io_dir(false);
  if (!parent) COROCKPT_SKIP(no_buffered_only_dir);
  CAPTURE(parent->string());
  Runtime rt;
  auto storage = make(rt, kind);
  test::TempDir dir(*parent);
  constexpr std::size_t files = 4, file_bytes = 1 << 20, chunk = 64 << 10;
  AlignedBytes source(files * file_bytes);
  fill_random(source.span(), 7);
  bool all_direct = true;
  auto r = test::run_sync(
      rt, round_trip(*storage, dir.path().string(), DirectIo::prefer, files, file_bytes, chunk, source.span(),
                     &all_direct));
  INFO((r ? std::string() : r.error().to_string()));
  REQUIRE(r);
  CHECK_FALSE(all_direct);  // prefer fell back instead of failing the open
}

TEST_CASE("storage - a write to a full device is no_space naming the path and the operation", "[storage]") {
  auto kind = GENERATE(std::string("uring"), std::string("posix"));
  CAPTURE(kind);
  Runtime rt;
  auto storage = make(rt, kind);
  AlignedBytes block(1 << 20);
  auto r = test::run_sync(rt, [](Storage& s, std::span<const std::byte> bytes) -> Task<void> {
    auto file = co_await s.open("/dev/full", {OpenMode::read_write, DirectIo::never});
    if (!file) co_return fail(file.error());
    co_return co_await s.write_at(*file, 0, bytes);
  }(*storage, block.span()));
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::no_space);
  CHECK(r.error().context.path == "/dev/full");
  CHECK(r.error().context.operation == "write_at");
}

TEST_CASE("storage - regular_only refuses a device, a FIFO and a directory at once, and opens a regular file",
          "[storage]") {
  auto kind = GENERATE(std::string("uring"), std::string("posix"));
  CAPTURE(kind);
  Runtime rt;
  auto storage = make(rt, kind);
  test::TempDir dir;
  const std::string fifo = dir.file("fifo");
  REQUIRE(::mkfifo(fifo.c_str(), 0644) == 0);  // no writer: a blocking open would wait forever
  std::filesystem::create_directory(dir.file("sub"));
  const OpenOptions options{.mode = OpenMode::read, .direct = DirectIo::never, .regular_only = true};
  for (const auto& [path, kind_text] : std::vector<std::pair<std::string, std::string>>{
           {"/dev/zero", "a character device"}, {fifo, "a FIFO"}, {dir.file("sub"), "a directory"}}) {
    auto opened = test::run_sync(rt, storage->open(path, options));
    INFO(path);
    REQUIRE_FALSE(opened);
    CHECK(opened.error().code == Errc::invalid_argument);
    CHECK(opened.error().message == path + " is " + kind_text + ", not a regular file");
  }
  // A regular file opens, blocking reads and all (O_NONBLOCK is only for the open).
  REQUIRE(test::run_sync(rt, storage->open(dir.file("data"), {OpenMode::create})));
  auto regular = test::run_sync(rt, storage->open(dir.file("data"), options));
  REQUIRE(regular);
  CHECK((::fcntl(regular->fd(), F_GETFL) & O_NONBLOCK) == 0);
}

TEST_CASE("storage - a missing directory is not_found naming the path", "[storage]") {
  auto kind = GENERATE(std::string("uring"), std::string("posix"));
  CAPTURE(kind);
  Runtime rt;
  auto storage = make(rt, kind);
  test::TempDir dir;
  std::string missing = dir.file("no-such-dir/shard.safetensors");
  auto opened = test::run_sync(rt, storage->open(missing, {OpenMode::create}));
  REQUIRE_FALSE(opened);
  CHECK(opened.error().code == Errc::not_found);
  CHECK(opened.error().context.path == missing);
  CHECK(opened.error().context.operation == "open");

  auto listed = test::run_sync(rt, storage->list(dir.file("no-such-dir")));
  REQUIRE_FALSE(listed);
  CHECK(listed.error().code == Errc::not_found);
  auto made = test::run_sync(rt, storage->make_dir(dir.file("no-such-dir/child")));
  REQUIRE_FALSE(made);
  CHECK(made.error().code == Errc::not_found);
}

TEST_CASE("storage - an unaligned transfer on an O_DIRECT file is refused, naming the alignment", "[storage]") {
  auto kind = GENERATE(std::string("uring"), std::string("posix"));
  CAPTURE(kind);
  const auto parent = direct_io_dir(true);
  if (!parent) COROCKPT_SKIP(no_direct_dir);
  Runtime rt;
  auto storage = make(rt, kind);
  test::TempDir dir(*parent);
  AlignedBytes block(8192);
  auto r = test::run_sync(rt, [](Storage& s, std::string path, std::span<const std::byte> bytes) -> Task<void> {
    auto file = co_await s.open(path, {OpenMode::create, DirectIo::prefer});
    if (!file) co_return fail(file.error());
    if (!file->direct()) co_return fail(Errc::internal, "expected O_DIRECT in " + path);
    co_return co_await s.write_at(*file, 0, bytes.subspan(0, 100));
  }(*storage, dir.file("x"), block.span()));
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::invalid_argument);
  CHECK(r.error().message.find("O_DIRECT") != std::string::npos);
}

TEST_CASE("storage - padded direct write then truncate gives the exact size, and reads stop at the end", "[storage]") {
  auto kind = GENERATE(std::string("uring"), std::string("posix"));
  CAPTURE(kind);
  const auto parent = direct_io_dir(true);
  if (!parent) COROCKPT_SKIP(no_direct_dir);
  Runtime rt;
  auto storage = make(rt, kind);
  test::TempDir dir(*parent);
  AlignedBytes block(8192);
  fill_random(block.span(), 3);
  std::string path = dir.file("tail");
  auto r = test::run_sync(rt, [](Storage& s, std::string path, std::span<std::byte> bytes) -> Task<std::size_t> {
    auto file = co_await s.open(path, {OpenMode::create, DirectIo::prefer});
    if (!file) co_return fail(file.error());
    if (!file->direct()) co_return fail(Errc::internal, "expected O_DIRECT in " + path);
    if (auto ok = co_await s.write_at(*file, 0, bytes); !ok) co_return fail(ok.error());
    if (auto ok = co_await s.truncate(*file, 5000); !ok) co_return fail(ok.error());
    if (auto ok = co_await s.fsync(*file); !ok) co_return fail(ok.error());
    co_return co_await s.read_at(*file, 4096, bytes.subspan(0, 4096));  // 904 bytes remain
  }(*storage, path, block.span()));
  REQUIRE(r);
  CHECK(*r == 5000 - 4096);
  CHECK(std::filesystem::file_size(path) == 5000);
}

TEST_CASE("storage - make_dir, rename, list, fsync_dir and remove", "[storage]") {
  auto kind = GENERATE(std::string("uring"), std::string("posix"));
  CAPTURE(kind);
  Runtime rt;
  auto storage = make(rt, kind);
  test::TempDir dir;
  auto r = test::run_sync(rt, [](Storage& s, std::string root) -> Task<std::vector<DirEntry>> {
    if (auto ok = co_await s.make_dir(root + "/ckpt.tmp-1"); !ok) co_return fail(ok.error());
    auto file = co_await s.open(root + "/ckpt.tmp-1/a", {OpenMode::create});
    if (!file) co_return fail(file.error());
    file->close();
    if (auto ok = co_await s.rename(root + "/ckpt.tmp-1", root + "/ckpt"); !ok) co_return fail(ok.error());
    if (auto ok = co_await s.fsync_dir(root); !ok) co_return fail(ok.error());
    auto again = co_await s.make_dir(root + "/ckpt");
    if (again || again.error().code != Errc::already_exists) co_return fail(Errc::internal, "make_dir overwrote");
    auto entries = co_await s.list(root);
    if (!entries) co_return entries;
    if (auto ok = co_await s.remove(root + "/ckpt/a"); !ok) co_return fail(ok.error());
    if (auto ok = co_await s.remove(root + "/ckpt"); !ok) co_return fail(ok.error());
    co_return entries;
  }(*storage, dir.path().string()));
  REQUIRE(r);
  REQUIRE(r->size() == 1);
  CHECK((*r)[0].name == "ckpt");
  CHECK((*r)[0].is_directory);
  CHECK(std::filesystem::is_empty(dir.path()));
}

TEST_CASE("storage - creating a file that exists is refused, and an unknown plugin name is an error", "[storage]") {
  Runtime rt;
  auto storage = make(rt, "uring");
  test::TempDir dir;
  std::string path = dir.file("exists");
  REQUIRE(test::run_sync(rt, storage->open(path, {OpenMode::create})));
  auto again = test::run_sync(rt, storage->open(path, {OpenMode::create}));
  REQUIRE_FALSE(again);
  CHECK(again.error().code == Errc::already_exists);

  auto kind = parse_storage_kind("nfs");
  REQUIRE_FALSE(kind);
  CHECK(kind.error().message.find("nfs") != std::string::npos);
}

TEST_CASE("storage - writes from registered staging buffers round-trip", "[storage][uring]") {
  Runtime rt;
  auto storage = make(rt, "uring");
  auto pool = BufferPool::create({.buffer_bytes = 1 << 20, .buffer_count = 4}, make_host_allocator()).value();
  bool registered = storage->register_buffers(pool->regions());
  INFO("registered: " << registered);  // the kernel may refuse (RLIMIT_MEMLOCK): still correct
  test::TempDir dir;
  auto r = test::run_sync(rt, [](Storage& s, BufferPool& pool, std::string path) -> Task<void> {
    auto file = co_await s.open(path, {OpenMode::create});
    if (!file) co_return fail(file.error());
    std::vector<StagingBuffer> buffers;
    for (int i = 0; i < 4; ++i) {
      auto b = co_await pool.acquire();
      if (!b) co_return fail(b.error());
      fill_random(b->bytes(), 100 + i);
      buffers.push_back(std::move(*b));
    }
    std::vector<Task<void>> writes;
    for (std::size_t i = 0; i < buffers.size(); ++i) writes.push_back(s.write_at(*file, i << 20, buffers[i].bytes()));
    if (auto ok = all_ok(co_await when_all(std::move(writes))); !ok) co_return ok;
    AlignedBytes back(1 << 20);
    for (std::size_t i = 0; i < buffers.size(); ++i) {
      auto n = co_await s.read_at(*file, i << 20, back.span());
      if (!n || *n != back.size) co_return fail(Errc::io, "short read");
      if (std::memcmp(back.data.get(), buffers[i].data(), back.size) != 0) co_return fail(Errc::corrupt, "differs");
    }
    co_return Result<void>{};
  }(*storage, *pool, dir.file("fixed")));
  INFO((r ? std::string() : r.error().to_string()));
  REQUIRE(r);
}

TEST_CASE("storage - where io_uring cannot be set up, automatic falls back to posix and uring says why",
          "[storage]") {
  ::setenv("COROCKPT_NO_URING", "1", 1);
  Runtime rt;
  auto automatic = make_storage(rt, StorageKind::automatic);
  auto uring = make_storage(rt, StorageKind::uring);
  ::unsetenv("COROCKPT_NO_URING");
  REQUIRE(automatic);
  CHECK((*automatic)->name() == "posix");
  REQUIRE_FALSE(uring);
  CHECK(uring.error().code == Errc::unavailable);
  CHECK(uring.error().message.find("io_uring") != std::string::npos);
}

TEST_CASE("storage - allocate reserves the size up front, and buffers register only before the first transfer",
          "[storage]") {
  auto kind = GENERATE(std::string("uring"), std::string("posix"));
  CAPTURE(kind);
  Runtime rt;
  auto storage = make(rt, kind);
  test::TempDir dir;
  std::string path = dir.file("reserved");
  AlignedBytes block(4096);
  auto r = test::run_sync(rt, [](Storage& s, std::string p, std::span<const std::byte> bytes) -> Task<void> {
    auto file = co_await s.open(p, {OpenMode::create});
    if (!file) co_return fail(file.error());
    if (auto ok = co_await s.allocate(*file, 3 << 20); !ok) co_return ok;
    co_return co_await s.write_at(*file, 1 << 20, bytes);
  }(*storage, path, block.span()));
  REQUIRE(r);
  CHECK(std::filesystem::file_size(path) == (3u << 20));
  AlignedBytes later(1 << 20);
  std::vector<std::span<std::byte>> regions{later.span()};
  CHECK_FALSE(storage->register_buffers(regions));
}

TEST_CASE("storage - a directory's lock has one holder across open descriptions, follows a rename, ends when dropped",
          "[storage]") {
  auto kind = GENERATE(std::string("uring"), std::string("posix"));
  CAPTURE(kind);
  Runtime rt;
  auto storage = make(rt, kind);
  test::TempDir dir;
  const std::string first = dir.file("ckpt.tmp-1"), renamed = dir.file("ckpt");
  std::filesystem::create_directory(first);

  auto held = test::run_sync(rt, storage->try_lock_dir(first));
  REQUIRE(held);
  REQUIRE(held->has_value());
  // Another open of the same directory, in this process, through the storage or not.
  auto again = test::run_sync(rt, storage->try_lock_dir(first));
  REQUIRE(again);
  CHECK_FALSE(again->has_value());
  const int outside = ::open(first.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(outside >= 0);
  CHECK(::flock(outside, LOCK_EX | LOCK_NB) != 0);
  // The lock is the directory's, not its name's: it is still held under the new name.
  std::filesystem::rename(first, renamed);
  auto after_rename = test::run_sync(rt, storage->try_lock_dir(renamed));
  REQUIRE(after_rename);
  CHECK_FALSE(after_rename->has_value());
  held->reset();
  CHECK(::flock(outside, LOCK_EX | LOCK_NB) == 0);  // released: an outside holder now
  auto outside_holds = test::run_sync(rt, storage->try_lock_dir(renamed));
  REQUIRE(outside_holds);
  CHECK_FALSE(outside_holds->has_value());
  ::close(outside);
  auto free_again = test::run_sync(rt, storage->try_lock_dir(renamed));
  REQUIRE(free_again);
  CHECK(free_again->has_value());
}

TEST_CASE("storage - try_lock_dir never follows a symlink and says not_found for a missing directory", "[storage]") {
  auto kind = GENERATE(std::string("uring"), std::string("posix"));
  CAPTURE(kind);
  Runtime rt;
  auto storage = make(rt, kind);
  test::TempDir dir;
  std::filesystem::create_directory(dir.file("real"));
  std::filesystem::create_directory_symlink(dir.file("real"), dir.file("link.tmp-0123456789abcdef"));
  auto link = test::run_sync(rt, storage->try_lock_dir(dir.file("link.tmp-0123456789abcdef")));
  REQUIRE_FALSE(link);
  CHECK(link.error().code == Errc::invalid_argument);
  CHECK(link.error().message.find("link.tmp-0123456789abcdef") != std::string::npos);
  auto missing = test::run_sync(rt, storage->try_lock_dir(dir.file("missing")));
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == Errc::not_found);
}

TEST_CASE("storage - allocated_bytes counts the blocks a file holds, reserved ones included", "[storage]") {
  auto kind = GENERATE(std::string("uring"), std::string("posix"));
  CAPTURE(kind);
  Runtime rt;
  auto storage = make(rt, kind);
  test::TempDir dir;
  const std::string path = dir.file("reserved");
  auto r = test::run_sync(rt, [](Storage& s, std::string p) -> Task<void> {
    auto file = co_await s.open(p, {OpenMode::create});
    if (!file) co_return fail(file.error());
    co_return co_await s.allocate(*file, 1 << 20);
  }(*storage, path));
  REQUIRE(r);
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  auto bytes = test::run_sync(rt, storage->allocated_bytes(path));
  REQUIRE(bytes);
  CHECK(*bytes == static_cast<std::uint64_t>(st.st_blocks) * 512);
  CHECK(*bytes >= (1u << 20));
  auto missing = test::run_sync(rt, storage->allocated_bytes(dir.file("missing")));
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == Errc::not_found);
}
