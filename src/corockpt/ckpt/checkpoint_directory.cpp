#include "corockpt/ckpt/checkpoint_directory.hpp"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "corockpt/ckpt/detail/directory_commit.hpp"
#include "corockpt/ckpt/format/checkpoint_metadata.hpp"

namespace corockpt {

namespace {

struct Entry {
  std::string name;
  std::int64_t step;
  bool partial;
};

// "step-<digits>" or "step-<digits>.tmp-<id>"; anything else is not ours.
std::optional<Entry> parse_entry(const std::string& name) {
  if (!name.starts_with("step-")) return std::nullopt;
  std::size_t end = 5;
  while (end < name.size() && name[end] >= '0' && name[end] <= '9') ++end;
  if (end == 5 || end - 5 > 18) return std::nullopt;
  const bool partial = end < name.size();
  if (partial && name.compare(end, 5, ".tmp-") != 0) return std::nullopt;
  return Entry{name, std::stoll(name.substr(5, end - 5)), partial};
}

// Checkpoints under root, complete ones checked for their metadata file.
Task<std::vector<Entry>> scan(CheckpointIo io, std::string root) {
  std::vector<Entry> out;
  auto entries = co_await io.storage->list(root);
  if (!entries) {
    if (entries.error().code == Errc::not_found) co_return out;
    co_return fail(entries.error());
  }
  for (const auto& e : *entries) {
    if (!e.is_directory) continue;
    auto entry = parse_entry(e.name);
    if (!entry) continue;
    if (!entry->partial) {
      auto inside = co_await io.storage->list(root + "/" + e.name);
      if (!inside) continue;
      const bool committed = std::any_of(inside->begin(), inside->end(), [](const DirEntry& d) {
        return d.name == checkpoint_metadata_file;
      });
      if (!committed) continue;
    }
    out.push_back(*entry);
  }
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.step < b.step; });
  co_return out;
}

}  // namespace

std::string step_checkpoint_name(std::int64_t step) {
  char name[40];
  std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(step));
  return name;
}

Task<std::optional<FoundCheckpoint>> latest_checkpoint(CheckpointIo io, std::string root) {
  root = detail::strip_trailing_slashes(std::move(root));
  auto found = co_await scan(io, root);
  if (!found) co_return fail(found.error());
  std::optional<FoundCheckpoint> latest;
  for (const auto& e : *found) {
    if (!e.partial) latest = FoundCheckpoint{root + "/" + e.name, e.step};
  }
  co_return latest;
}

Task<int> remove_old_checkpoints(CheckpointIo io, std::string root, int keep_last) {
  root = detail::strip_trailing_slashes(std::move(root));
  auto found = co_await scan(io, root);
  if (!found) co_return fail(found.error());
  std::vector<std::int64_t> complete;
  for (const auto& e : *found) {
    if (!e.partial) complete.push_back(e.step);
  }
  if (complete.empty()) co_return 0;
  const std::size_t keep = static_cast<std::size_t>(std::max(keep_last, 1));
  const std::int64_t oldest_kept = complete.size() > keep ? complete[complete.size() - keep] : complete.front();
  const std::int64_t newest = complete.back();
  int removed = 0;
  for (const auto& e : *found) {
    const bool old_complete = !e.partial && e.step < oldest_kept;
    const bool stale_partial = e.partial && e.step < newest;
    if (!old_complete && !stale_partial) continue;
    // Held through the rename and the removal: a live save's directory (a partial one)
    // is left alone, and no cleaner races this removal. Where directories cannot be
    // locked, the step order alone decides, as it did before locks.
    std::string path = root + "/" + e.name;  // named: GCC 12 mishandles temporaries in co_await calls
    auto lock = co_await io.storage->try_lock_dir(std::move(path));
    if (lock && !*lock) continue;
    // Removed or committed meanwhile, or not lockable as a directory (a symlink, no
    // permission): left alone, as remove_leftovers does, rather than ending retention.
    if (!lock && lock.error().code != Errc::unavailable) continue;
    // Renamed first: a crash half-way through the removal leaves a partial checkpoint,
    // never a complete-looking one with files missing.
    std::string doomed = root + "/" + e.name;
    if (!e.partial) {
      doomed += ".tmp-removing";
      if (auto ok = co_await io.storage->rename(root + "/" + e.name, doomed); !ok) co_return fail(ok.error());
    }
    if (auto ok = co_await detail::remove_directory(io, doomed); !ok) co_return fail(ok.error());
    ++removed;
  }
  co_return removed;
}

}  // namespace corockpt
