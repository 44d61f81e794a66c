#pragma once
/// @file
/// Temporary directories: a save (or consolidate) writes into `<dir>.tmp-<16 hex digits>`
/// beside `dir` and renames it to `dir` at its commit (save.hpp). A killed one leaves it
/// behind with the space its files reserved. This is who owns one, and how the ones
/// nobody owns (leftovers) are removed.
///
/// Ownership is a lock (DirLock, flock on the directory itself) that the writer takes
/// when it makes the directory and holds until its commit or removal is over. The
/// kernel drops it when the writer dies, even by SIGKILL, so a leftover is a temporary
/// directory whose lock can be taken. A remover takes that lock first and keeps it while
/// it removes: a live save's directory is never removed, and two removers never race.
/// The lock is on the directory, not on a file in it, so it follows the directory
/// through the commit's rename and nothing is added to the checkpoint; there is no moment
/// at which a live save's directory looks unowned.
///
/// Where that knowledge ends:
/// - flock is per host. On a shared file system, a lock taken on another host may not be
///   seen here: NFS emulates flock with byte-range locks, which directories refuse (then
///   Storage::try_lock_dir says Errc::unavailable and nothing is removed: "ownership
///   unknown"), or keeps it local to the client (`local_lock=flock`, `nolock`), and then
///   a live save on another host looks unowned and would be removed. Clean such a root
///   only while no other host saves into it.
/// - Builds before the lock leave the same names; their leftovers are removed like any
///   other (nobody holds their lock). A save by such a build running at the same time is
///   not protected: it takes no lock.
/// - A child made by fork() (without exec) during a save shares its lock until it exits.
/// - `<dir>.tmp-removing` (a complete checkpoint being removed by retention,
///   checkpoint_directory.hpp) is a temporary directory too.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "corockpt/ckpt/checkpoint_io.hpp"
#include "corockpt/plugins/storage/dir_lock.hpp"

namespace corockpt {

struct RemovedLeftover {
  std::string path;
  std::uint64_t bytes = 0;  ///< disk space it held (Storage::allocated_bytes; 0 where unknown)
};

struct KeptLeftover {
  enum class Why {
    in_use,             ///< a live process holds its lock
    ownership_unknown,  ///< the lock cannot be asked for here (Errc::unavailable: NFS...)
    removal_failed,     ///< nobody owned it, but removing it failed
  };
  std::string path;
  Why why = Why::in_use;
  std::string reason;  ///< the same, in words, with the error where there is one
};

struct LeftoverReport {
  std::vector<RemovedLeftover> removed;  ///< in a dry run: those that would be
  std::vector<KeptLeftover> kept;
  std::uint64_t freed_bytes() const;
};

struct LeftoverOptions {
  std::string name;      ///< only `<name>.tmp-*`; empty: every temporary directory
  bool dry_run = false;  ///< report, remove nothing
};

/// A temporary directory being written, as make_temporary_directory made it. Keep it
/// until the commit or the removal of `path` is over: its lock says the directory is live.
struct TemporaryDirectory {
  std::string path;
  std::optional<DirLock> lock;  ///< absent where the storage cannot lock (Errc::unavailable)
  LeftoverReport leftovers;     ///< `<dir>.tmp-*` nobody owned, removed before it was made
};

/// Whether `entry` names a temporary directory (`<base>.tmp-<16 lowercase hex digits>` or
/// `<base>.tmp-removing`, `<base>` not empty) of `name` (of any name when empty).
bool is_temporary_name(std::string_view entry, std::string_view name);

/// Removes the temporary directories directly under `root` (not below; symlinks never)
/// that nobody owns, each while holding its lock.
/// @returns what was removed with the space it held, and what was kept and why; a
///   removal that fails is kept, not an error. Errc::not_found etc. when `root` cannot be
///   listed.
Task<LeftoverReport> remove_leftovers(CheckpointIo io, std::string root, LeftoverOptions options);

}  // namespace corockpt
