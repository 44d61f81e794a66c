#pragma once
/// @file
/// `PowerCutStorage`: a deterministic, in-memory `Storage` for crash-consistency tests.
///
/// It models what survives a power cut, pessimistically (what POSIX promises, no more):
///
/// - Every file inode has *volatile* bytes (what reads see; `write_at`, `truncate`,
///   `allocate` and `open` with truncate change them) and *durable* bytes, copied from the
///   volatile ones by `fsync(file)`.
/// - Every directory inode has volatile entries (name -> inode; `make_dir`, `open` that
///   creates, `rename` and `remove` change them) and durable entries, copied from the
///   volatile ones by `fsync_dir(dir)`. `fsync(file)` does not make the file's own entry
///   durable, and `fsync_dir` covers only the directory's own entries, not its children.
/// - `power_cut()`: every inode's volatile state becomes its durable state, and the tree is
///   what is reachable from the root "/" through durable entries. A file created and
///   fsynced in a directory that was never fsync_dir'd is gone; a directory made in a
///   parent that was never fsync_dir'd is gone with everything under it; a rename not
///   followed by fsync_dir of both parents is undone. The root always exists.
///
/// Fault injection: `fail_from(n)` makes the n-th mutating operation from now (0 = the
/// next one) and every later one fail with Errc::io ("simulated power cut") without
/// changing anything. Mutating operations are: `open` with OpenMode::create or
/// OpenMode::truncate, `write_at`, `truncate`, `allocate`, `fsync`, `make_dir`, `rename`,
/// `remove`, `fsync_dir` — each call counts once, whether it succeeds or not. Reads,
/// `list` and `open` for read / read_write keep working. `power_cut()` clears the fault
/// (the machine came back), as does `reset_faults()`. `mutations()` counts every mutating
/// call since construction, so a test runs a clean save once to learn how many there are
/// (`after - before`) and then loops n = 0..count on fresh (or re-seeded) storages.
///
/// Paths are absolute or relative (relative means relative to "/"); "a//b", "./", a
/// trailing "/" and ".." are normalised. Errors follow the real plugins' errno mapping
/// (see runtime/error.cpp): a missing file or parent, or a file used as a directory, is
/// Errc::not_found; an existing name for create/make_dir, or a non-empty directory for
/// rename's target or remove, is Errc::already_exists; a directory opened as a file, or
/// written through a read-only handle, is Errc::invalid_argument.
///
/// Files: every `File` holds its own descriptor of /dev/null (File's destructor closes it),
/// which maps the File to its inode — so a file stays writable after it is renamed or
/// removed, as with a real descriptor. Files are buffered (`direct() == false`,
/// alignments 1). Handles opened before a power cut are dead after it (Errc::io).
///
/// Every operation completes at once (no threads, no timers); state is guarded by one
/// mutex that is never held across a suspension, so ranks on strands of one io_context
/// (or any threads) may share one instance.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "corockpt/plugins/storage/storage.hpp"
#include "corockpt/runtime/error.hpp"
#include "corockpt/runtime/task.hpp"

namespace corockpt::test {

class PowerCutStorage final : public Storage {
 public:
  /// Files larger than this fail with Errc::no_space (keeps a bad offset from eating RAM).
  static constexpr std::uint64_t max_file_bytes = std::uint64_t{1} << 32;

  PowerCutStorage() { inodes_.emplace(root_id, Inode{.is_dir = true}); }
  PowerCutStorage(const PowerCutStorage&) = delete;
  PowerCutStorage& operator=(const PowerCutStorage&) = delete;

  std::string_view name() const override { return "power_cut"; }

  // ---- Storage -------------------------------------------------------------------------

  Task<File> open(std::string path, OpenOptions options) override { co_return open_now(path, options); }
  Task<void> write_at(File& file, std::uint64_t offset, std::span<const std::byte> data) override {
    co_return write_now(file, offset, data);
  }
  Task<std::size_t> read_at(File& file, std::uint64_t offset, std::span<std::byte> data) override {
    co_return read_now(file, offset, data);
  }
  Task<void> fsync(File& file) override { co_return fsync_now(file); }
  Task<void> truncate(File& file, std::uint64_t size) override { co_return resize_now(file, size, "truncate"); }
  Task<void> allocate(File& file, std::uint64_t size) override { co_return resize_now(file, size, "allocate"); }
  Task<void> make_dir(std::string path) override { co_return make_dir_now(path); }
  Task<void> rename(std::string from, std::string to) override { co_return rename_now(from, to); }
  Task<void> remove(std::string path) override { co_return remove_now(path); }
  Task<std::vector<DirEntry>> list(std::string dir) override { co_return list_now(dir); }
  Task<void> fsync_dir(std::string path) override { co_return fsync_dir_now(path); }

  // ---- Power cuts and faults -----------------------------------------------------------

  /// Everything not made durable is lost: see the file comment. Clears any injected
  /// fault; File handles opened before are dead (their operations fail with Errc::io).
  void power_cut() {
    std::lock_guard lock(mutex_);
    for (auto& [id, inode] : inodes_) {
      inode.data = inode.durable_data;
      inode.entries = inode.durable_entries;
    }
    // Keep only what the root reaches.
    std::unordered_map<std::uint64_t, Inode> kept;
    std::vector<std::uint64_t> stack{root_id};
    while (!stack.empty()) {
      auto id = stack.back();
      stack.pop_back();
      auto it = inodes_.find(id);
      if (it == inodes_.end() || kept.contains(id)) continue;
      for (const auto& [child_name, child] : it->second.entries) stack.push_back(child);
      kept.emplace(id, std::move(it->second));
    }
    inodes_ = std::move(kept);
    handles_.clear();
    fail_at_.reset();
    ++power_cuts_;
  }

  /// The n-th mutating operation from now (0-based: 0 is the next one) and every later one
  /// fail with Errc::io until `reset_faults()` or `power_cut()`.
  void fail_from(std::uint64_t n) {
    std::lock_guard lock(mutex_);
    fail_at_ = mutations_ + n;
  }
  void reset_faults() {
    std::lock_guard lock(mutex_);
    fail_at_.reset();
  }
  /// Mutating operations called since construction (failed ones included).
  std::uint64_t mutations() const {
    std::lock_guard lock(mutex_);
    return mutations_;
  }
  /// Mutating operations that failed because of `fail_from`.
  std::uint64_t injected_failures() const {
    std::lock_guard lock(mutex_);
    return injected_failures_;
  }
  std::uint64_t power_cuts() const {
    std::lock_guard lock(mutex_);
    return power_cuts_;
  }

  // ---- Inspection and seeding (not counted as mutations) -------------------------------

  /// Whether `path` names a file or directory now (the volatile view).
  bool exists(std::string_view path) const {
    std::lock_guard lock(mutex_);
    return lookup(split(path)).has_value();
  }
  bool is_directory(std::string_view path) const {
    std::lock_guard lock(mutex_);
    auto id = lookup(split(path));
    return id && inodes_.at(*id).is_dir;
  }
  /// The bytes reads see now. Throws std::runtime_error if `path` is not a file.
  std::string read_file(std::string_view path) const {
    std::lock_guard lock(mutex_);
    auto id = lookup(split(path));
    if (!id) throw std::runtime_error("PowerCutStorage::read_file: no such file: " + std::string(path));
    const Inode& inode = inodes_.at(*id);
    if (inode.is_dir) throw std::runtime_error("PowerCutStorage::read_file: is a directory: " + std::string(path));
    return inode.data;
  }
  /// Every path under "/" now, sorted; directories end with "/" ("/a/", "/a/b").
  std::vector<std::string> list_tree() const {
    std::lock_guard lock(mutex_);
    return tree(false);
  }
  /// What `list_tree()` would return after a power cut now (file contents aside).
  std::vector<std::string> durable_tree() const {
    std::lock_guard lock(mutex_);
    return tree(true);
  }
  /// Creates (or replaces) a file with `bytes`, making missing parent directories, all
  /// durable at once: a state from before the test (a previous checkpoint, say).
  void put_file(std::string_view path, std::string_view bytes) {
    std::lock_guard lock(mutex_);
    auto parts = split(path);
    if (parts.empty()) throw std::runtime_error("PowerCutStorage::put_file: not a file path: " + std::string(path));
    std::uint64_t dir = root_id;
    for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
      Inode& d = inodes_.at(dir);
      auto it = d.entries.find(parts[i]);
      if (it == d.entries.end()) {
        auto id = new_inode(true);
        Inode& parent = inodes_.at(dir);  // new_inode may rehash
        parent.entries[parts[i]] = id;
        parent.durable_entries[parts[i]] = id;
        dir = id;
      } else {
        if (!inodes_.at(it->second).is_dir) {
          throw std::runtime_error("PowerCutStorage::put_file: not a directory on the way: " + std::string(path));
        }
        dir = it->second;
      }
    }
    auto& entries = inodes_.at(dir).entries;
    if (auto it = entries.find(parts.back()); it != entries.end() && inodes_.at(it->second).is_dir) {
      throw std::runtime_error("PowerCutStorage::put_file: is a directory: " + std::string(path));
    }
    auto id = new_inode(false);
    Inode& file = inodes_.at(id);
    file.data = std::string(bytes);
    file.durable_data = file.data;
    Inode& parent = inodes_.at(dir);
    parent.entries[parts.back()] = id;
    parent.durable_entries[parts.back()] = id;
  }

 private:
  static constexpr std::uint64_t root_id = 0;

  struct Inode {
    bool is_dir = false;
    std::string data;          ///< files: what reads see
    std::string durable_data;  ///< files: as of the last fsync
    std::map<std::string, std::uint64_t> entries;          ///< directories: volatile
    std::map<std::string, std::uint64_t> durable_entries;  ///< directories: as of the last fsync_dir
  };

  struct Handle {
    std::uint64_t inode = 0;
    std::string path;  ///< File::path() at open: guards against a foreign File with a reused fd
    bool writable = false;
  };

  /// A parent directory and the last component of a path.
  struct Place {
    std::uint64_t dir = 0;
    std::string name;
  };

  static std::vector<std::string> split(std::string_view path) {
    std::vector<std::string> parts;
    std::size_t i = 0;
    while (i <= path.size()) {
      auto slash = path.find('/', i);
      if (slash == std::string_view::npos) slash = path.size();
      auto part = path.substr(i, slash - i);
      if (part == "..") {
        if (!parts.empty()) parts.pop_back();
      } else if (!part.empty() && part != ".") {
        parts.emplace_back(part);
      }
      i = slash + 1;
    }
    return parts;
  }

  static std::string join(const std::vector<std::string>& parts) {
    std::string out;
    for (const auto& p : parts) out += "/" + p;
    return out.empty() ? "/" : out;
  }

  static std::unexpected<Error> error(Errc code, std::string message, std::string_view operation,
                                      std::string_view path) {
    return fail(code, std::move(message), {.path = std::string(path), .operation = std::string(operation)});
  }

  std::uint64_t new_inode(bool is_dir) {
    auto id = next_id_++;
    inodes_.emplace(id, Inode{.is_dir = is_dir});
    return id;
  }

  /// The inode `parts` names, or not_found (a missing component, or a file on the way).
  Result<std::uint64_t> lookup(const std::vector<std::string>& parts, std::size_t count) const {
    std::uint64_t id = root_id;
    for (std::size_t i = 0; i < count; ++i) {
      const Inode& dir = inodes_.at(id);
      if (!dir.is_dir) return fail(Errc::not_found, "not a directory: " + join({parts.begin(), parts.begin() + i}));
      auto it = dir.entries.find(parts[i]);
      if (it == dir.entries.end()) {
        return fail(Errc::not_found, "no such file or directory: " + join({parts.begin(), parts.begin() + i + 1}));
      }
      id = it->second;
    }
    return id;
  }
  Result<std::uint64_t> lookup(const std::vector<std::string>& parts) const { return lookup(parts, parts.size()); }

  /// The parent directory of `parts` (which must not be the root) and the last name.
  Result<Place> place_of(const std::vector<std::string>& parts) const {
    auto dir = lookup(parts, parts.size() - 1);
    if (!dir) return fail(dir.error());
    if (!inodes_.at(*dir).is_dir) return fail(Errc::not_found, "parent is not a directory");
    return Place{*dir, parts.back()};
  }

  /// Counts one mutating call; the injected fault, if it is due.
  Result<void> mutation(std::string_view operation, std::string_view path) {
    auto index = mutations_++;
    if (fail_at_ && index >= *fail_at_) {
      ++injected_failures_;
      return error(Errc::io, "simulated power cut (mutation #" + std::to_string(index) + ")", operation, path);
    }
    return {};
  }

  /// The handle of `file`, checked against this storage's table.
  Result<Handle*> handle_of(const File& file, std::string_view operation) {
    if (!file.is_open()) return error(Errc::invalid_argument, "file is not open", operation, file.path());
    auto it = handles_.find(file.fd());
    if (it == handles_.end() || it->second.path != file.path()) {
      return error(Errc::io, "file handle is not open on this storage (opened before a power cut?)", operation,
                   file.path());
    }
    return &it->second;
  }

  Result<File> open_now(const std::string& path, OpenOptions options) {
    std::lock_guard lock(mutex_);
    const bool creates = options.mode == OpenMode::create || options.mode == OpenMode::truncate;
    if (creates) {
      if (auto ok = mutation("open", path); !ok) return fail(ok.error());
    }
    auto parts = split(path);
    if (parts.empty()) return error(Errc::invalid_argument, "is a directory", "open", path);
    auto place = place_of(parts);
    if (!place) return error(place.error().code, place.error().message, "open", path);
    auto& entries = inodes_.at(place->dir).entries;
    auto it = entries.find(place->name);
    if (it != entries.end() && inodes_.at(it->second).is_dir) {
      return error(Errc::invalid_argument, "is a directory", "open", path);
    }
    if (options.mode == OpenMode::create && it != entries.end()) {
      return error(Errc::already_exists, "file exists", "open", path);
    }
    if (!creates && it == entries.end()) return error(Errc::not_found, "no such file", "open", path);

    // The descriptor first: nothing changes if it cannot be had.
    int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(system_error(errno, "open", path));
    std::uint64_t id;
    if (it != entries.end()) {
      id = it->second;
      if (options.mode == OpenMode::truncate) inodes_.at(id).data.clear();
    } else {
      id = new_inode(false);
      inodes_.at(place->dir).entries.emplace(place->name, id);
    }
    handles_[fd] = Handle{id, path, options.mode != OpenMode::read};
    return File(fd, path, false, 1, 1);
  }

  Result<void> write_now(const File& file, std::uint64_t offset, std::span<const std::byte> data) {
    std::lock_guard lock(mutex_);
    if (auto ok = mutation("write_at", file.path()); !ok) return ok;
    auto handle = handle_of(file, "write_at");
    if (!handle) return fail(handle.error());
    if (!(*handle)->writable) return error(Errc::invalid_argument, "file is open read-only", "write_at", file.path());
    if (offset > max_file_bytes || data.size() > max_file_bytes - offset) {
      return error(Errc::no_space, "file would exceed the simulated size limit", "write_at", file.path());
    }
    std::string& bytes = inodes_.at((*handle)->inode).data;
    const auto end = static_cast<std::size_t>(offset + data.size());
    if (bytes.size() < end) bytes.resize(end, '\0');
    if (!data.empty()) std::memcpy(bytes.data() + offset, data.data(), data.size());
    return {};
  }

  Result<std::size_t> read_now(const File& file, std::uint64_t offset, std::span<std::byte> data) {
    std::lock_guard lock(mutex_);
    auto handle = handle_of(file, "read_at");
    if (!handle) return fail(handle.error());
    const std::string& bytes = inodes_.at((*handle)->inode).data;
    if (offset >= bytes.size()) return std::size_t{0};
    const auto n = std::min<std::size_t>(data.size(), bytes.size() - static_cast<std::size_t>(offset));
    if (n != 0) std::memcpy(data.data(), bytes.data() + offset, n);
    return n;
  }

  Result<void> fsync_now(const File& file) {
    std::lock_guard lock(mutex_);
    if (auto ok = mutation("fsync", file.path()); !ok) return ok;
    auto handle = handle_of(file, "fsync");
    if (!handle) return fail(handle.error());
    Inode& inode = inodes_.at((*handle)->inode);
    inode.durable_data = inode.data;
    return {};
  }

  /// `truncate` sets the size; `allocate` only grows it. Both zero-fill.
  Result<void> resize_now(const File& file, std::uint64_t size, std::string_view operation) {
    std::lock_guard lock(mutex_);
    if (auto ok = mutation(operation, file.path()); !ok) return ok;
    auto handle = handle_of(file, operation);
    if (!handle) return fail(handle.error());
    if (!(*handle)->writable) return error(Errc::invalid_argument, "file is open read-only", operation, file.path());
    if (size > max_file_bytes) {
      return error(Errc::no_space, "file would exceed the simulated size limit", operation, file.path());
    }
    std::string& bytes = inodes_.at((*handle)->inode).data;
    if (operation == "truncate" || bytes.size() < size) bytes.resize(static_cast<std::size_t>(size), '\0');
    return {};
  }

  Result<void> make_dir_now(const std::string& path) {
    std::lock_guard lock(mutex_);
    if (auto ok = mutation("make_dir", path); !ok) return ok;
    auto parts = split(path);
    if (parts.empty()) return error(Errc::already_exists, "file exists", "make_dir", path);
    auto place = place_of(parts);
    if (!place) return error(place.error().code, place.error().message, "make_dir", path);
    if (inodes_.at(place->dir).entries.contains(place->name)) {
      return error(Errc::already_exists, "file exists", "make_dir", path);
    }
    auto id = new_inode(true);
    inodes_.at(place->dir).entries.emplace(place->name, id);
    return {};
  }

  Result<void> rename_now(const std::string& from, const std::string& to) {
    std::lock_guard lock(mutex_);
    const std::string both = from + " -> " + to;
    if (auto ok = mutation("rename", both); !ok) return ok;
    auto src = split(from);
    auto dst = split(to);
    if (src.empty() || dst.empty()) return error(Errc::invalid_argument, "cannot rename the root", "rename", both);
    auto from_place = place_of(src);
    if (!from_place) return error(from_place.error().code, from_place.error().message, "rename", both);
    auto& from_entries = inodes_.at(from_place->dir).entries;
    auto from_it = from_entries.find(from_place->name);
    if (from_it == from_entries.end()) return error(Errc::not_found, "no such file or directory", "rename", both);
    auto to_place = place_of(dst);
    if (!to_place) return error(to_place.error().code, to_place.error().message, "rename", both);
    const std::uint64_t moving = from_it->second;
    const bool moving_dir = inodes_.at(moving).is_dir;
    if (src == dst) return {};
    if (moving_dir && dst.size() > src.size() && std::equal(src.begin(), src.end(), dst.begin())) {
      return error(Errc::invalid_argument, "cannot move a directory into itself", "rename", both);
    }
    auto& to_entries = inodes_.at(to_place->dir).entries;
    if (auto to_it = to_entries.find(to_place->name); to_it != to_entries.end()) {
      if (to_it->second == moving) return {};
      const Inode& target = inodes_.at(to_it->second);
      if (target.is_dir && !moving_dir) return error(Errc::invalid_argument, "is a directory", "rename", both);
      if (!target.is_dir && moving_dir) return error(Errc::not_found, "not a directory", "rename", both);
      if (target.is_dir && !target.entries.empty()) {
        return error(Errc::already_exists, "directory not empty", "rename", both);
      }
    }
    from_entries.erase(from_it);
    to_entries[to_place->name] = moving;
    return {};
  }

  Result<void> remove_now(const std::string& path) {
    std::lock_guard lock(mutex_);
    if (auto ok = mutation("remove", path); !ok) return ok;
    auto parts = split(path);
    if (parts.empty()) return error(Errc::invalid_argument, "cannot remove the root", "remove", path);
    auto place = place_of(parts);
    if (!place) return error(place.error().code, place.error().message, "remove", path);
    auto& entries = inodes_.at(place->dir).entries;
    auto it = entries.find(place->name);
    if (it == entries.end()) return error(Errc::not_found, "no such file or directory", "remove", path);
    const Inode& target = inodes_.at(it->second);
    if (target.is_dir && !target.entries.empty()) {
      return error(Errc::already_exists, "directory not empty", "remove", path);
    }
    entries.erase(it);  // the inode lives on for open handles, until the next power cut
    return {};
  }

  Result<std::vector<DirEntry>> list_now(const std::string& dir) {
    std::lock_guard lock(mutex_);
    auto id = lookup(split(dir));
    if (!id) return error(Errc::not_found, id.error().message, "list", dir);
    const Inode& inode = inodes_.at(*id);
    if (!inode.is_dir) return error(Errc::not_found, "not a directory", "list", dir);
    std::vector<DirEntry> out;
    out.reserve(inode.entries.size());
    for (const auto& [entry_name, child] : inode.entries) out.push_back({entry_name, inodes_.at(child).is_dir});
    return out;  // std::map keeps them sorted by name
  }

  Result<void> fsync_dir_now(const std::string& path) {
    std::lock_guard lock(mutex_);
    if (auto ok = mutation("fsync_dir", path); !ok) return ok;
    auto id = lookup(split(path));
    if (!id) return error(Errc::not_found, id.error().message, "fsync_dir", path);
    Inode& inode = inodes_.at(*id);
    if (!inode.is_dir) return error(Errc::not_found, "not a directory", "fsync_dir", path);
    inode.durable_entries = inode.entries;
    return {};
  }

  std::vector<std::string> tree(bool durable) const {
    std::vector<std::string> out;
    std::vector<std::pair<std::uint64_t, std::string>> stack{{root_id, ""}};
    while (!stack.empty()) {
      auto [id, prefix] = stack.back();
      stack.pop_back();
      const Inode& dir = inodes_.at(id);
      for (const auto& [entry_name, child] : durable ? dir.durable_entries : dir.entries) {
        const bool child_dir = inodes_.at(child).is_dir;
        out.push_back(prefix + "/" + entry_name + (child_dir ? "/" : ""));
        if (child_dir) stack.emplace_back(child, prefix + "/" + entry_name);
      }
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  mutable std::mutex mutex_;
  std::unordered_map<std::uint64_t, Inode> inodes_;
  std::unordered_map<int, Handle> handles_;
  std::uint64_t next_id_ = root_id + 1;
  std::uint64_t mutations_ = 0;
  std::uint64_t injected_failures_ = 0;
  std::uint64_t power_cuts_ = 0;
  std::optional<std::uint64_t> fail_at_;
};

}  // namespace corockpt::test
