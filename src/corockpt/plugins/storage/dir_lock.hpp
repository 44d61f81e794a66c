#pragma once
/// @file
/// `DirLock`: an exclusive advisory lock (flock) held on a directory, the way a process
/// says "this directory is mine and alive" (a save's temporary directory). It is taken on
/// the directory itself, not on a file in it, so it follows the directory through a
/// rename and leaves nothing behind in it.
///
/// What it promises, and where that ends:
/// - It belongs to one open file description: another open of the same directory, in this
///   process or another, cannot take it while it is held (flock, unlike fcntl's record
///   locks, is not per process).
/// - The kernel releases it when the last descriptor of that description closes: on
///   destruction, or when the process ends, even by SIGKILL. The descriptor is
///   close-on-exec, but a child made by fork() without exec shares it (and so the lock)
///   until it exits.
/// - It is advisory: only code that asks for it (Storage::try_lock_dir) respects it.
/// - It is known on one host only. On NFS, flock is emulated by the client (with byte-range
///   locks that cannot be taken on a directory, or, with `local_lock=flock`, locally
///   only): a lock held on another host may be invisible. Storage::try_lock_dir says
///   Errc::unavailable where the file system refuses it.

#include <utility>

namespace corockpt {

class DirLock {
 public:
  /// Takes ownership of `fd`, a descriptor of the directory with the lock held on it.
  explicit DirLock(int fd) : fd_(fd) {}
  DirLock(DirLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  DirLock& operator=(DirLock&& other) noexcept;
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;
  /// Releases the lock (closes the descriptor).
  ~DirLock();

 private:
  int fd_ = -1;
};

}  // namespace corockpt
