// Crash consistency of save's commit protocol, deterministically: on PowerCutStorage a
// save of checkpoint B next to a committed A is cut off at each of its storage mutations
// in turn (every later mutation fails too, as after a crash), the power is cut, and what
// is left must be: A intact, and B absent, recognisably partial, or whole — never a
// directory named B that does not load.
#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tests/ckpt/checkpoint_test_support.hpp"
#include "tests/ckpt/seed_spec.hpp"
#include "tests/support/power_cut_storage.hpp"

using namespace corockpt;
using corockpt::test::PowerCutStorage;
using corockpt::test::TestIo;

namespace {

const std::string parent_dir = "/ckpts";
const std::string a_dir = "/ckpts/a";
const std::string b_dir = "/ckpts/b";
const std::string c_dir = "/ckpts/c";

ModelSpec crash_spec() { return test::spec_of(test::odd_spec_json("per_param", 4, "float32")); }

// The mutating operations a storage saw, in order (names and paths), for finding the
// commit's steps in a clean save.
class RecordingStorage final : public Storage {
 public:
  explicit RecordingStorage(std::unique_ptr<PowerCutStorage> inner) : inner_(std::move(inner)) {}
  PowerCutStorage& inner() { return *inner_; }
  const std::vector<std::string>& log() const { return log_; }

  std::string_view name() const override { return inner_->name(); }
  Task<File> open(std::string path, OpenOptions options) override {
    if (options.mode == OpenMode::create || options.mode == OpenMode::truncate) record("open " + path);
    return inner_->open(std::move(path), options);
  }
  Task<void> write_at(File& file, std::uint64_t offset, std::span<const std::byte> data) override {
    record("write_at " + file.path());
    return inner_->write_at(file, offset, data);
  }
  Task<std::size_t> read_at(File& file, std::uint64_t offset, std::span<std::byte> data) override {
    return inner_->read_at(file, offset, data);
  }
  Task<void> fsync(File& file) override {
    record("fsync " + file.path());
    return inner_->fsync(file);
  }
  Task<void> truncate(File& file, std::uint64_t size) override {
    record("truncate " + file.path());
    return inner_->truncate(file, size);
  }
  Task<void> allocate(File& file, std::uint64_t size) override {
    record("allocate " + file.path());
    return inner_->allocate(file, size);
  }
  Task<void> make_dir(std::string path) override {
    record("make_dir " + path);
    return inner_->make_dir(std::move(path));
  }
  Task<void> rename(std::string from, std::string to) override {
    record("rename " + from + " -> " + to);
    return inner_->rename(std::move(from), std::move(to));
  }
  Task<void> remove(std::string path) override {
    record("remove " + path);
    return inner_->remove(std::move(path));
  }
  Task<std::vector<DirEntry>> list(std::string dir) override { return inner_->list(std::move(dir)); }
  Task<void> fsync_dir(std::string path) override {
    record("fsync_dir " + path);
    return inner_->fsync_dir(std::move(path));
  }

 private:
  // Ranks call from strands of one io_context, possibly on several threads.
  void record(std::string op) {
    std::lock_guard lock(mutex_);
    log_.push_back(std::move(op));
  }
  std::unique_ptr<PowerCutStorage> inner_;
  std::mutex mutex_;
  std::vector<std::string> log_;
};

// Every file of `storage` now (path -> bytes).
std::map<std::string, std::string> files_of(const PowerCutStorage& storage) {
  std::map<std::string, std::string> files;
  for (const auto& path : storage.list_tree()) {
    if (!path.ends_with('/')) files[path] = storage.read_file(path);
  }
  return files;
}

// A storage holding `files`, all durable: the state before the save under test.
std::unique_ptr<PowerCutStorage> storage_with(const std::map<std::string, std::string>& files) {
  auto storage = std::make_unique<PowerCutStorage>();
  for (const auto& [path, bytes] : files) storage->put_file(path, bytes);
  return storage;
}

// Installs `storage` as io's storage; a reference to it stays valid until the next swap.
template <class S>
S& use(TestIo& io, std::unique_ptr<S> storage) {
  S& ref = *storage;
  io.swap_storage(std::move(storage));
  return ref;
}

// `dir` loads on every rank with every value as saved, and verify finds nothing wrong.
void check_loads_clean(TestIo& io, const ModelSpec& spec, const std::string& dir) {
  INFO("checkpoint " << dir);
  auto loaded = test::load_on(io, spec, dir);
  std::int64_t checked = 0;
  for (std::size_t r = 0; r < loaded.size(); ++r) {
    INFO("rank " << r << ": " << (loaded[r] ? loaded[r]->mismatch : loaded[r].error().to_string()));
    REQUIRE(loaded[r].has_value());
    CHECK(loaded[r]->mismatch == "");
    CHECK(loaded[r]->report.user["step"] == 7);
    checked += loaded[r]->checked;
  }
  CHECK(checked > 0);
  const VerifyReport report = test::verify_on(io, dir);
  INFO(test::problems_text(report));
  CHECK(report.ok());
  CHECK(report.bytes_checked > 0);
}

// A `<dir>.tmp-*` left by an interrupted save: load refuses it, verify calls it partial.
void check_partial(TestIo& io, const ModelSpec& spec, const std::string& tmp) {
  INFO("partial checkpoint " << tmp);
  for (auto& l : test::load_on(io, spec, tmp)) {
    REQUIRE_FALSE(l.has_value());
    CHECK(l.error().code == Errc::invalid_argument);
  }
  const VerifyReport report = test::verify_on(io, tmp);
  INFO(test::problems_text(report));
  REQUIRE_FALSE(report.ok());
  CHECK_THAT(report.problems[0].message, Catch::Contains("partial"));
}

// The names in `dir` now (directories end with '/').
std::vector<std::string> names_in(const PowerCutStorage& storage, const std::string& dir) {
  std::vector<std::string> names;
  const std::string prefix = dir + "/";
  for (const auto& path : storage.list_tree()) {
    if (!path.starts_with(prefix) || path.size() == prefix.size()) continue;
    const std::string rest = path.substr(prefix.size());
    const auto slash = rest.find('/');
    if (slash == std::string::npos || slash + 1 == rest.size()) names.push_back(rest);
  }
  return names;
}

// What a power cut leaves in /ckpts after a save of B was cut off at its mutation #n.
struct Aftermath {
  bool b_whole = false;
  bool b_partial = false;
};

// A clean save of B, recorded: how many mutations it makes, and where the commit's
// rename and the parent's fsync fall among them.
struct CleanSave {
  std::vector<std::string> log;
  std::uint64_t rename_at = 0;
  std::uint64_t fsync_parent_at = 0;
};

CleanSave record_clean_save(TestIo& io, const ModelSpec& spec, const std::map<std::string, std::string>& a_files) {
  auto& recorder = use(io, std::make_unique<RecordingStorage>(storage_with(a_files)));
  const std::uint64_t before = recorder.inner().mutations();
  test::save_on(io, spec, b_dir);
  const std::uint64_t count = recorder.inner().mutations() - before;
  CleanSave clean{.log = recorder.log(), .rename_at = count, .fsync_parent_at = count};
  REQUIRE(clean.log.size() == count);
  for (std::uint64_t i = 0; i < count; ++i) {
    if (clean.log[i].starts_with("rename ") && clean.log[i].ends_with(" -> " + b_dir)) clean.rename_at = i;
    if (clean.log[i] == "fsync_dir " + parent_dir) clean.fsync_parent_at = i;
  }
  INFO("a clean save of B makes " << count << " mutations; the rename is #" << clean.rename_at
                                  << ", the parent's last fsync #" << clean.fsync_parent_at);
  REQUIRE(clean.log.front().starts_with("make_dir " + b_dir + ".tmp-"));
  REQUIRE(clean.rename_at < clean.fsync_parent_at);
  REQUIRE(clean.fsync_parent_at < count);
  return clean;
}

// Saves B on storage holding A with mutation #n and every later one failing; then, if
// `later_save`, saves C cleanly (its commit fsyncs the parent, making whatever B left
// there durable); then cuts the power and checks what is left.
Aftermath cut_off(TestIo& io, const ModelSpec& spec, const std::map<std::string, std::string>& a_files,
                  std::uint64_t n, bool later_save) {
  auto& storage = use(io, storage_with(a_files));
  storage.fail_from(n);
  auto saved = test::try_save_on(io, spec, b_dir);
  for (std::size_t r = 0; r < saved.size(); ++r) {
    INFO("rank " << r);
    REQUIRE_FALSE(saved[r].has_value());
    CHECK(saved[r].error().code == Errc::io);
    CHECK_THAT(saved[r].error().to_string(), Catch::Contains("simulated power cut"));
  }
  CHECK(storage.injected_failures() > 0);
  // Before the power cut: a directory named B (renamed, the parent's fsync failed) is whole.
  if (storage.exists(b_dir)) check_loads_clean(io, spec, b_dir);

  if (later_save) {
    storage.reset_faults();
    test::save_on(io, spec, c_dir);
  }
  storage.power_cut();
  check_loads_clean(io, spec, a_dir);
  if (later_save) check_loads_clean(io, spec, c_dir);

  Aftermath after;
  const auto names = names_in(storage, parent_dir);
  for (const auto& name : names) {
    if (name == "a/" || (later_save && name == "c/")) continue;
    if (name == "b/") {
      after.b_whole = true;
      check_loads_clean(io, spec, b_dir);
    } else if (name.starts_with("b.tmp-") && name.ends_with('/')) {
      after.b_partial = true;
      check_partial(io, spec, parent_dir + "/" + name.substr(0, name.size() - 1));
    } else {
      FAIL("unexpected entry in " << parent_dir << ": " << name);
    }
  }
  if (n == 0) CHECK_FALSE((after.b_whole || after.b_partial));  // nothing was made

  // What the crash left is no obstacle to saving B again.
  if (!after.b_whole) {
    test::save_on(io, spec, b_dir);
    check_loads_clean(io, spec, b_dir);
  }
  return after;
}

// Every cut-off point of a save of `spec`'s B, with and without a later save's commit.
void check_every_cut_off(const ModelSpec& spec, std::size_t buffer_bytes, std::size_t buffer_count) {
  TestIo io(StorageKind::automatic, buffer_bytes, buffer_count);
  auto& first = use(io, std::make_unique<PowerCutStorage>());
  test::save_on(io, spec, a_dir);
  const auto a_files = files_of(first);
  const CleanSave clean = record_clean_save(io, spec, a_files);
  const std::uint64_t count = clean.log.size();

  for (const bool later_save : {false, true}) {
    int absent = 0, partial = 0, whole = 0;
    for (std::uint64_t n = 0; n < count; ++n) {
      INFO("the save's mutation #" << n << " (in the clean run: " << clean.log[n] << ") and every later one fail"
                                   << (later_save ? "; a save of C commits before the power cut" : ""));
      const Aftermath after = cut_off(io, spec, a_files, n, later_save);
      if (after.b_whole) {
        ++whole;
        // Only a rename made durable survives: by its own parent fsync, or C's.
        CHECK(n > (later_save ? clean.rename_at : clean.fsync_parent_at));
      } else if (after.b_partial) {
        ++partial;
      } else {
        ++absent;
      }
      if (n <= clean.rename_at) CHECK_FALSE(after.b_whole);
    }
    INFO("a clean save of B makes " << count << " mutations (rename #" << clean.rename_at << ", parent fsync #"
                                    << clean.fsync_parent_at << "); after cut-offs"
                                    << (later_save ? " and C's commit" : "") << " B was absent " << absent
                                    << " times, partial " << partial << ", whole " << whole);
    CHECK(absent > 0);
    CHECK(absent + partial + whole == static_cast<int>(count));
    if (later_save) CHECK(partial > 0);  // the leftover temporary directory, made durable by C's commit
  }
}

}  // namespace

TEST_CASE("Checkpoint crash: a save cut off at any storage operation leaves the old checkpoint intact and the new one absent or partial") {
  SECTION("the odd spec on 4 ranks (per_param)") {
    check_every_cut_off(crash_spec(), 1 << 20, 8);
  }
  SECTION("the seed on 4 ranks (flat) through two 4 KiB staging buffers") {
    check_every_cut_off(test::spec_of(test::seed_spec_json("flat", 4, 2)), 4096, 2);
  }
}

TEST_CASE("Checkpoint crash: a power cut right after a save keeps the new checkpoint and the old one") {
  const ModelSpec spec = crash_spec();
  TestIo io;
  auto& first = use(io, std::make_unique<PowerCutStorage>());
  test::save_on(io, spec, a_dir);
  const auto a_files = files_of(first);

  auto& storage = use(io, storage_with(a_files));
  test::save_on(io, spec, b_dir);
  CHECK(storage.durable_tree() == storage.list_tree());  // everything the save made is durable
  storage.power_cut();
  CHECK(names_in(storage, parent_dir) == std::vector<std::string>{"a/", "b/"});
  check_loads_clean(io, spec, a_dir);
  check_loads_clean(io, spec, b_dir);
}

// A save that creates its missing parent makes the parent's own entry durable too.
TEST_CASE("Checkpoint crash: a save that creates its missing parent directory survives a power cut") {
  const ModelSpec spec = crash_spec();
  TestIo io;
  auto& storage = use(io, std::make_unique<PowerCutStorage>());  // no /ckpts yet
  test::save_on(io, spec, a_dir);
  CHECK(storage.durable_tree() == storage.list_tree());
  storage.power_cut();
  REQUIRE(storage.exists(a_dir));
  check_loads_clean(io, spec, a_dir);
}
