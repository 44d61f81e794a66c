#include "corockpt/ckpt/temporary_directory.hpp"

#include <algorithm>

#include "corockpt/ckpt/detail/directory_commit.hpp"

namespace corockpt {

namespace {

std::string child_of(const std::string& root, const std::string& name) {
  return root == "/" ? root + name : root + "/" + name;
}

/// The space `dir` and the files in it hold (0 for what the storage cannot tell).
Task<std::uint64_t> space_of(CheckpointIo io, std::string dir) {
  std::uint64_t bytes = 0;
  if (auto own = co_await io.storage->allocated_bytes(dir)) bytes += *own;
  auto entries = co_await io.storage->list(dir);
  if (!entries) co_return bytes;
  for (const auto& entry : *entries) {
    std::string file = child_of(dir, entry.name);  // named: GCC 12 mishandles temporaries in co_await calls
    if (auto held = co_await io.storage->allocated_bytes(std::move(file))) bytes += *held;
  }
  co_return bytes;
}

}  // namespace

std::uint64_t LeftoverReport::freed_bytes() const {
  std::uint64_t total = 0;
  for (const auto& r : removed) total += r.bytes;
  return total;
}

bool is_temporary_name(std::string_view entry, std::string_view name) {
  constexpr std::string_view marker = ".tmp-";
  const auto at = entry.rfind(marker);
  if (at == std::string_view::npos || at == 0) return false;
  const std::string_view base = entry.substr(0, at);
  const std::string_view id = entry.substr(at + marker.size());
  const bool random_id = id.size() == 16 && std::all_of(id.begin(), id.end(), [](char c) {
                           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
                         });
  if (!random_id && id != "removing") return false;
  return name.empty() || base == name;
}

Task<LeftoverReport> remove_leftovers(CheckpointIo io, std::string root, LeftoverOptions options) {
  root = detail::strip_trailing_slashes(std::move(root));
  auto entries = co_await io.storage->list(root);
  if (!entries) co_return fail(entries.error());
  LeftoverReport report;
  for (const auto& entry : *entries) {
    // A symlink is not a directory here, so neither it nor what it points to is touched.
    if (!entry.is_directory || !is_temporary_name(entry.name, options.name)) continue;
    const std::string path = child_of(root, entry.name);
    auto lock = co_await io.storage->try_lock_dir(path);
    if (!lock) {
      // Gone meanwhile (committed, or removed by another cleaner): nothing left to do.
      if (lock.error().code != Errc::not_found) {
        report.kept.push_back(
            {path, KeptLeftover::Why::ownership_unknown, "ownership unknown, left alone: " + lock.error().to_string()});
      }
      continue;
    }
    if (!*lock) {
      report.kept.push_back(
          {path, KeptLeftover::Why::in_use, "in use: a live process holds its lock (a save in progress)"});
      continue;
    }
    auto bytes = co_await space_of(io, path);
    if (!options.dry_run) {
      if (auto removed = co_await detail::remove_directory(io, path); !removed) {
        report.kept.push_back(
            {path, KeptLeftover::Why::removal_failed, "could not be removed: " + removed.error().to_string()});
        continue;
      }
    }
    report.removed.push_back({path, bytes.value_or(0)});
  }  // each lock is released as its iteration ends, after the removal
  co_return report;
}

}  // namespace corockpt
