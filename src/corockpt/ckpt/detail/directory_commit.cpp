#include "corockpt/ckpt/detail/directory_commit.hpp"

#include <cstdio>
#include <random>

namespace corockpt::detail {

namespace {

std::string random_id() {
  std::random_device device;
  const std::uint64_t id = (static_cast<std::uint64_t>(device()) << 32) ^ device();
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(id));
  return text;
}

std::string name_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

std::string strip_trailing_slashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

std::string parent_of(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

namespace {

/// Creates `dir` and whichever of its ancestors are missing, each made durable in its
/// parent (the new directories' entries must survive a power cut, or the checkpoint would
/// not). @returns its (then empty) entries.
Task<std::vector<DirEntry>> list_or_make(CheckpointIo io, std::string dir) {
  auto entries = co_await io.storage->list(dir);
  if (entries || entries.error().code != Errc::not_found) co_return entries;
  const std::string parent = parent_of(dir);
  if (parent != dir) {
    if (auto up = co_await list_or_make(io, parent); !up) co_return fail(up.error());
  }
  if (auto made = co_await io.storage->make_dir(dir); !made && made.error().code != Errc::already_exists) {
    co_return fail(made.error());
  }
  if (auto synced = co_await io.storage->fsync_dir(parent); !synced) co_return fail(synced.error());
  co_return std::vector<DirEntry>{};
}

}  // namespace

Task<TemporaryDirectory> make_temporary_directory(CheckpointIo io, std::string dir) {
  const std::string parent = parent_of(dir);
  auto entries = co_await list_or_make(io, parent);
  if (!entries) co_return fail(entries.error());
  for (const auto& entry : *entries) {
    if (entry.name == name_of(dir)) {
      co_return fail(Errc::already_exists, dir + " exists and is never overwritten in place (write under a new name)",
                     {.path = dir});
    }
  }
  LeftoverOptions ours;
  ours.name = name_of(dir);
  auto leftovers = co_await remove_leftovers(io, parent, std::move(ours));
  if (!leftovers) co_return fail(leftovers.error());
  // A cleaner may lock (and remove) the new directory between its mkdir and our lock: it
  // is then the cleaner's, and a fresh name is tried.
  constexpr int attempts = 4;
  for (int attempt = 0; attempt < attempts; ++attempt) {
    std::string tmp = dir + ".tmp-" + random_id();
    if (auto made = co_await io.storage->make_dir(tmp); !made) co_return fail(made.error());
    auto lock = co_await io.storage->try_lock_dir(tmp);
    if (!lock && lock.error().code != Errc::unavailable && lock.error().code != Errc::not_found) {
      co_return fail(lock.error());
    }
    if (lock && !*lock) continue;
    if (!lock && lock.error().code == Errc::not_found) continue;
    TemporaryDirectory made;
    made.path = std::move(tmp);
    if (lock) made.lock = std::move(**lock);  // unavailable: saves go on, unowned (temporary_directory.hpp)
    made.leftovers = std::move(*leftovers);
    co_return std::move(made);
  }
  co_return fail(Errc::io,
                 "could not make a temporary directory for " + dir + ": another process took each of " +
                     std::to_string(attempts) + " new ones before its lock could be held",
                 {.path = dir, .operation = "lock"});
}

Task<void> write_durable_file(CheckpointIo io, std::string path, std::string text) {
  auto file = co_await io.storage->open(path, {.mode = OpenMode::create, .direct = DirectIo::never});
  if (!file) co_return fail(file.error());
  if (auto ok = co_await io.storage->write_at(*file, 0, std::as_bytes(std::span(text))); !ok) co_return fail(ok.error());
  co_return co_await io.storage->fsync(*file);
}

Task<void> commit_directory(CheckpointIo io, std::string tmp, std::string dir) {
  if (auto ok = co_await io.storage->fsync_dir(tmp); !ok) co_return fail(ok.error());
  if (auto ok = co_await io.storage->rename(tmp, dir); !ok) co_return fail(ok.error());
  co_return co_await io.storage->fsync_dir(parent_of(dir));
}

Task<void> remove_directory(CheckpointIo io, std::string dir) {
  Result<void> first;
  auto entries = co_await io.storage->list(dir);
  if (entries) {
    for (const auto& entry : *entries) {
      auto removed = co_await io.storage->remove(dir + "/" + entry.name);
      if (!removed && first) first = removed;
    }
  }
  auto removed = co_await io.storage->remove(dir);
  if (!removed && first) first = removed;
  co_return first;
}

}  // namespace corockpt::detail
