// Temporary directories of saves: who owns one (the process that holds its lock), and
// the leftovers of killed saves removed — by remove_leftovers (`corockpt clean`), by a
// later save of the same name, and by retention — with the space they held, while a live
// save's directory is never removed. Saves are killed for real: a forked child begins a
// save, writes data, and SIGKILLs itself (or waits, holding its save, until released).
#include "corockpt/ckpt/temporary_directory.hpp"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "corockpt/ckpt/checkpoint_directory.hpp"
#include "corockpt/ckpt/save.hpp"
#include "corockpt/ckpt/save_steps.hpp"
#include "tests/support/local_ranks.hpp"
#include "tests/support/run_sync.hpp"
#include "tests/support/temp_dir.hpp"

using namespace corockpt;
using corockpt::test::TempDir;
using corockpt::test::TestIo;
namespace fs = std::filesystem;

namespace {

constexpr std::int64_t elements = 1 << 18;  // 1 MiB of float32

LocalChunk whole_w(std::vector<float>& values) {
  return LocalChunk{.name = "w",
                    .dtype = DType::float32,
                    .shape = {elements},
                    .box = Box{{0}, {elements}},
                    .bytes = std::as_writable_bytes(std::span(values)),
                    .writer = true};
}

// The child's side of fork_saver: never returns into Catch2.
[[noreturn]] void saver_child(const std::string& dir, bool kill_itself, int to_parent, int released) {
  try {
    TestIo io;
    auto begun = test::run_sync(io.runtime(), begin_save(io.io(), dir));
    if (!begun) throw std::runtime_error(begun.error().to_string());
    std::vector<float> values(elements, 1.5f);
    std::vector<LocalChunk> chunks{whole_w(values)};
    SaveOptions options;
    auto plan = test::run_sync(io.runtime(), write_rank_data(io.io(), begun->path, 0, chunks, options));
    if (!plan) throw std::runtime_error(plan.error().to_string());
    if (::write(to_parent, begun->path.data(), begun->path.size()) != static_cast<ssize_t>(begun->path.size())) {
      throw std::runtime_error("write to the parent failed");
    }
    ::close(to_parent);
    if (kill_itself) ::raise(SIGKILL);  // what a killed save leaves: no abandon, no unlock
    char byte;
    while (::read(released, &byte, 1) > 0) {
    }
    ::_exit(0);  // ends holding the save, uncommitted: the kernel drops the lock
  } catch (const std::exception& e) {
    std::fprintf(stderr, "saver child: %s\n", e.what());
  }
  ::_exit(3);
}

// A child process that began a save of `dir` and wrote 1 MiB of data into it: killed
// (SIGKILL, by itself) before `fork_saver` returns, or alive and holding the save until
// `release`. Assertions stay on the test's thread; the child reports through pipes.
class Saver {
 public:
  Saver(const std::string& dir, bool kill_itself) {
    int to_parent[2], released[2];
    REQUIRE(::pipe2(to_parent, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(released, O_CLOEXEC) == 0);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::close(to_parent[0]);
      ::close(released[1]);
      saver_child(dir, kill_itself, to_parent[1], released[0]);
    }
    ::close(to_parent[1]);
    ::close(released[0]);
    release_fd_ = released[1];
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(to_parent[0], buffer, sizeof buffer)) > 0) tmp_.append(buffer, static_cast<std::size_t>(n));
    ::close(to_parent[0]);
    if (kill_itself) {
      const int status = wait();
      CHECK(WIFSIGNALED(status));
      CHECK(WTERMSIG(status) == SIGKILL);
    }
    REQUIRE_FALSE(tmp_.empty());  // else the child failed: its stderr says why
  }
  ~Saver() {
    release();
    if (pid_ > 0) wait();
  }
  Saver(const Saver&) = delete;
  Saver& operator=(const Saver&) = delete;

  const std::string& tmp() const { return tmp_; }
  /// Lets a holding child end (uncommitted) and waits for it. @returns its exit status.
  int release_and_wait() {
    release();
    return wait();
  }

 private:
  void release() {
    if (release_fd_ >= 0) ::close(release_fd_);
    release_fd_ = -1;
  }
  int wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }
  pid_t pid_ = -1;
  int release_fd_ = -1;
  std::string tmp_;
};

// What `dir` and its entries hold on disk, measured independently of the storage plugin.
std::uint64_t space_on_disk(const std::string& dir) {
  struct stat st {};
  std::uint64_t total = ::lstat(dir.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_blocks) * 512 : 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (::lstat(entry.path().c_str(), &st) == 0) total += static_cast<std::uint64_t>(st.st_blocks) * 512;
  }
  return total;
}

std::vector<std::string> paths_of(const LeftoverReport& report) {
  std::vector<std::string> paths;
  for (const auto& removed : report.removed) paths.push_back(removed.path);
  return paths;
}

}  // namespace

TEST_CASE("temporary directories - a name is a temporary directory's only as <base>.tmp-<16 hex> or .tmp-removing") {
  CHECK(is_temporary_name("ckpt.tmp-0123456789abcdef", ""));
  CHECK(is_temporary_name("ckpt.tmp-0123456789abcdef", "ckpt"));
  CHECK(is_temporary_name("step-00000004.tmp-removing", "step-00000004"));
  CHECK(is_temporary_name("a.tmp-b.tmp-0123456789abcdef", "a.tmp-b"));
  CHECK_FALSE(is_temporary_name("ckpt.tmp-0123456789abcdef", "ckp"));
  CHECK_FALSE(is_temporary_name("other.tmp-0123456789abcdef", "ckpt"));
  CHECK_FALSE(is_temporary_name("ckpt", ""));
  CHECK_FALSE(is_temporary_name(".tmp-0123456789abcdef", ""));
  CHECK_FALSE(is_temporary_name("ckpt.tmp-0123456789ABCDEF", ""));
  CHECK_FALSE(is_temporary_name("ckpt.tmp-0123456789abcde", ""));
  CHECK_FALSE(is_temporary_name("ckpt.tmp-0123456789abcdef.old", ""));
  CHECK_FALSE(is_temporary_name("ckpt.tmp-", ""));
}

TEST_CASE(
    "temporary directories - a killed save's leftover is removed with the space it held; a dry run removes "
    "nothing") {
  TempDir root;
  const std::string dir = root.file("ckpt");
  Saver killed(dir, /*kill_itself=*/true);
  REQUIRE(fs::is_directory(killed.tmp()));
  const std::uint64_t held = space_on_disk(killed.tmp());
  CHECK(held >= elements * 4);  // the data file's reserved space at least

  TestIo io;
  LeftoverOptions dry;
  dry.dry_run = true;
  auto listed = test::run_sync(io.runtime(), remove_leftovers(io.io(), root.path().string(), dry));
  REQUIRE(listed);
  CHECK(paths_of(*listed) == std::vector<std::string>{killed.tmp()});
  CHECK(listed->freed_bytes() == held);
  CHECK(listed->kept.empty());
  CHECK(fs::is_directory(killed.tmp()));  // a dry run removes nothing

  auto cleaned = test::run_sync(io.runtime(), remove_leftovers(io.io(), root.path().string(), LeftoverOptions{}));
  REQUIRE(cleaned);
  REQUIRE(cleaned->removed.size() == 1);
  CHECK(cleaned->removed[0].path == killed.tmp());
  CHECK(cleaned->removed[0].bytes == held);
  CHECK(cleaned->freed_bytes() == held);
  CHECK_FALSE(fs::exists(killed.tmp()));
}

TEST_CASE("temporary directories - a later save of the same name removes a killed one's leftover and reports it") {
  TempDir root;
  const std::string dir = root.file("ckpt");
  Saver killed(dir, /*kill_itself=*/true);
  Saver other_name(root.file("other"), /*kill_itself=*/true);
  const std::uint64_t held = space_on_disk(killed.tmp());

  TestIo io;
  std::vector<float> values(elements, 2.5f);
  std::vector<LocalChunk> chunks{whole_w(values)};
  auto world = make_local_world(io.runtime(), 1);
  REQUIRE(world);
  const SaveScope scope{.world = (*world)[0], .rank = 0, .world_size = 1};
  auto saved = test::run_sync(io.runtime(), save_chunks(scope, chunks, io.io(), dir, SaveOptions{}));
  REQUIRE(saved);
  CHECK(paths_of(saved->leftovers) == std::vector<std::string>{killed.tmp()});
  CHECK(saved->leftovers.freed_bytes() == held);
  CHECK_FALSE(fs::exists(killed.tmp()));
  CHECK(fs::exists(dir + "/corockpt.metadata.json"));
  // Only leftovers of the name being saved: another name's is the clean command's.
  CHECK(fs::is_directory(other_name.tmp()));
}

TEST_CASE(
    "temporary directories - a live save's directory is never removed, whether another process or this one "
    "holds it") {
  TempDir root;
  const std::string dir = root.file("ckpt");
  Saver live(dir, /*kill_itself=*/false);

  TestIo io;
  auto here = test::run_sync(io.runtime(), begin_save(io.io(), root.file("mine")));
  REQUIRE(here);
  REQUIRE(here->lock.has_value());

  auto cleaned = test::run_sync(io.runtime(), remove_leftovers(io.io(), root.path().string(), LeftoverOptions{}));
  REQUIRE(cleaned);
  CHECK(cleaned->removed.empty());
  REQUIRE(cleaned->kept.size() == 2);
  for (const auto& kept : cleaned->kept) CHECK(kept.why == KeptLeftover::Why::in_use);
  CHECK(fs::is_directory(live.tmp()));
  CHECK(fs::is_directory(here->path));

  // A later save of the same name leaves the other process's live one alone too.
  auto again = test::run_sync(io.runtime(), begin_save(io.io(), dir));
  REQUIRE(again);
  CHECK(again->leftovers.removed.empty());
  REQUIRE(again->leftovers.kept.size() == 1);
  CHECK(again->leftovers.kept[0].path == live.tmp());
  CHECK(fs::is_directory(live.tmp()));
  REQUIRE(test::run_sync(io.runtime(), abandon_save(io.io(), again->path)));

  // Once its process ends (uncommitted), the lock is gone and the directory is a leftover.
  const int status = live.release_and_wait();
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  auto after = test::run_sync(io.runtime(), remove_leftovers(io.io(), root.path().string(), LeftoverOptions{}));
  REQUIRE(after);
  CHECK(paths_of(*after) == std::vector<std::string>{live.tmp()});
  CHECK_FALSE(fs::exists(live.tmp()));
  CHECK(fs::is_directory(here->path));  // still held here
}

TEST_CASE("temporary directories - only <name>.tmp-<id> directories directly under the root are candidates") {
  TempDir root, outside;
  const std::string base = root.path().string();
  const std::vector<std::string> dirs = {"/ckpt",
                                         "/ckpt.tmp-short",
                                         "/ckpt.tmp-0123456789ABCDEF",
                                         "/ckpt.tmp-0123456789abcdef.old",
                                         "/.tmp-0123456789abcdef",
                                         "/sub",
                                         "/sub/inner.tmp-0123456789abcdef"};
  for (const auto& d : dirs) fs::create_directory(base + d);
  std::ofstream(base + "/file.tmp-0123456789abcdef") << "a file, not a directory";
  std::ofstream(outside.file("precious")) << "kept";
  fs::create_directory_symlink(outside.path(), base + "/link.tmp-0123456789abcdef");

  TestIo io;
  auto cleaned = test::run_sync(io.runtime(), remove_leftovers(io.io(), base, LeftoverOptions{}));
  REQUIRE(cleaned);
  CHECK(cleaned->removed.empty());
  CHECK(cleaned->kept.empty());
  for (const auto& d : dirs) CHECK(fs::is_directory(base + d));
  CHECK(fs::is_regular_file(base + "/file.tmp-0123456789abcdef"));
  CHECK(fs::is_symlink(base + "/link.tmp-0123456789abcdef"));
  CHECK(fs::is_regular_file(outside.file("precious")));
}

TEST_CASE("temporary directories - retention leaves a live save's older partial alone, and removes it once dead") {
  TempDir root;
  const std::string base = root.path().string();
  TestIo io;
  // A save of step 1 still running while steps 2 and 3 commit (a slow, concurrent writer).
  auto slow = test::run_sync(io.runtime(), begin_save(io.io(), base + "/" + step_checkpoint_name(1)));
  REQUIRE(slow);
  REQUIRE(slow->lock.has_value());
  for (std::int64_t step : {2, 3}) {
    const std::string done = base + "/" + step_checkpoint_name(step);
    fs::create_directory(done);
    std::ofstream(done + "/corockpt.metadata.json") << "{}";
  }
  auto removed = test::run_sync(io.runtime(), remove_old_checkpoints(io.io(), base, 1));
  REQUIRE(removed);
  CHECK(*removed == 1);  // step 2
  CHECK(fs::is_directory(slow->path));
  CHECK_FALSE(fs::exists(base + "/" + step_checkpoint_name(2)));

  slow->lock.reset();  // its writer gone
  auto later = test::run_sync(io.runtime(), remove_old_checkpoints(io.io(), base, 1));
  REQUIRE(later);
  CHECK(*later == 1);
  CHECK_FALSE(fs::exists(slow->path));
  CHECK(fs::exists(base + "/" + step_checkpoint_name(3)));
}
