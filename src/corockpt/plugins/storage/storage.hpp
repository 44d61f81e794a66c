#pragma once
/// @file
/// `Storage`: where checkpoint bytes go. Every operation is awaitable and many may be
/// in flight at once. Implementations: `uring` (io_uring, the fast path) and `posix`
/// (pread/pwrite on the worker pool: the fallback and the baseline).
///
/// Errors name the path and the operation; ENOSPC is Errc::no_space, EIO Errc::io,
/// EACCES Errc::permission_denied, a missing file or directory Errc::not_found. No
/// partial write is ever reported as success: a short write is continued, and a write
/// that makes no progress is an Errc::io error.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "corockpt/plugins/storage/dir_lock.hpp"
#include "corockpt/runtime/task.hpp"

namespace corockpt {

enum class OpenMode {
  read,            ///< existing file, read only
  create,          ///< new file, read-write; Errc::already_exists if it exists
  truncate,        ///< create or truncate, read-write
  read_write,      ///< existing file, read-write
};

enum class DirectIo {
  prefer,  ///< O_DIRECT where the filesystem supports it, buffered where it does not (tmpfs)
  never,   ///< always buffered
};

struct OpenOptions {
  OpenMode mode = OpenMode::read;
  DirectIo direct = DirectIo::prefer;
  /// Refuse anything but a regular file (a FIFO, a device such as /dev/zero, a socket, a
  /// directory) with Errc::invalid_argument naming what it is. The open itself does not
  /// block (O_NONBLOCK), so a FIFO with no writer cannot hang it.
  bool regular_only = false;
};

/// An open file. Closing happens when it is destroyed (or `close`).
///
/// Direct files (O_DIRECT) take only aligned transfers: offset and length multiples of
/// `offset_alignment()`, memory aligned to `memory_alignment()`; anything else is an
/// Errc::invalid_argument error, never a silent slow path. Buffered files take any
/// transfer (both alignments are 1). Staging buffers (4 KiB aligned) always qualify; a
/// file's tail is written padded to the alignment and then `truncate`d to its size.
class File {
 public:
  File() = default;
  File(int fd, std::string path, bool direct, std::uint32_t offset_alignment, std::uint32_t memory_alignment)
      : fd_(fd), path_(std::move(path)), direct_(direct), offset_alignment_(offset_alignment),
        memory_alignment_(memory_alignment) {}
  File(File&& other) noexcept { *this = std::move(other); }
  File& operator=(File&& other) noexcept;
  ~File() { close(); }

  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  bool is_open() const { return fd_ >= 0; }
  bool direct() const { return direct_; }
  std::uint32_t offset_alignment() const { return offset_alignment_; }
  std::uint32_t memory_alignment() const { return memory_alignment_; }
  /// Closes now (a close error is ignored: data safety comes from fsync, which reports).
  void close();

  /// Errc::invalid_argument naming the alignment if this transfer is not allowed.
  Result<void> check_transfer(std::uint64_t offset, const void* memory, std::size_t length,
                              std::string_view operation) const;

 private:
  int fd_ = -1;
  std::string path_;
  bool direct_ = false;
  std::uint32_t offset_alignment_ = 1;
  std::uint32_t memory_alignment_ = 1;
};

struct DirEntry {
  std::string name;
  bool is_directory = false;
};

/// A file's bytes, read-only, for as long as `owner` lives (a mapping, unmapped with it).
struct MappedBytes {
  std::string_view bytes;
  std::shared_ptr<const void> owner;
};

class Storage {
 public:
  virtual ~Storage() = default;
  /// "uring" or "posix".
  virtual std::string_view name() const = 0;

  virtual Task<File> open(std::string path, OpenOptions options) = 0;
  /// Writes all of `data` at `offset`, continuing short writes.
  virtual Task<void> write_at(File& file, std::uint64_t offset, std::span<const std::byte> data) = 0;
  /// Reads into `data` at `offset` until it is full or the file ends.
  /// @returns the number of bytes read (less than `data.size()` only at end of file).
  virtual Task<std::size_t> read_at(File& file, std::uint64_t offset, std::span<std::byte> data) = 0;
  /// Makes the file's data and size durable. Issue it after the writes it covers complete.
  virtual Task<void> fsync(File& file) = 0;
  virtual Task<void> truncate(File& file, std::uint64_t size) = 0;
  /// Reserves disk space for the first `size` bytes (fallocate; the size grows to it).
  /// A full disk is reported here, before any data moves, and O_DIRECT writes into the
  /// reserved range do not have to extend the file one write at a time.
  virtual Task<void> allocate(File& file, std::uint64_t size) = 0;

  virtual Task<void> make_dir(std::string path) = 0;
  /// Atomically replaces `to` with `from` (same filesystem). A non-empty directory `to`
  /// is not replaced (Errc::already_exists).
  virtual Task<void> rename(std::string from, std::string to) = 0;
  /// Removes a file or an empty directory.
  virtual Task<void> remove(std::string path) = 0;
  /// Entries of `dir` (without "." and ".."), sorted by name.
  virtual Task<std::vector<DirEntry>> list(std::string dir) = 0;
  /// Makes a directory's entries durable (after creates and renames in it).
  virtual Task<void> fsync_dir(std::string path) = 0;

  /// Takes an exclusive lock on the directory `path` itself (dir_lock.hpp) without
  /// waiting. A symlink is never followed (Errc::invalid_argument).
  /// @returns the lock; nullopt when someone else holds it; Errc::not_found when `path`
  ///   is gone, also when it was removed or renamed while being locked;
  ///   Errc::unavailable where directories cannot be locked (NFS; this default), so
  ///   nobody's ownership can be known there.
  virtual Task<std::optional<DirLock>> try_lock_dir(std::string path) {
    co_return fail(Errc::unavailable, std::string(name()) + " storage cannot lock directories",
                   {.path = std::move(path), .operation = "lock"});
  }
  /// The disk space `path` holds (allocated blocks: st_blocks * 512, so a file whose
  /// space was reserved by `allocate` counts it all; a symlink's own, not its target's).
  /// @returns Errc::unavailable where the storage cannot tell (this default).
  virtual Task<std::uint64_t> allocated_bytes(std::string path) {
    co_return fail(Errc::unavailable, std::string(name()) + " storage cannot tell the space a file holds",
                   {.path = std::move(path), .operation = "stat"});
  }

  /// The regular file `path` mapped read-only, its pages populated: for a file read whole
  /// by many readers (a checkpoint's tensor index, tens of MiB every loading rank reads),
  /// where copying it out of the page cache costs ten times the mapping.
  /// @returns Errc::unavailable where the storage cannot map (this default): read it then.
  virtual Task<MappedBytes> map_file(std::string path) {
    co_return fail(Errc::unavailable, std::string(name()) + " storage cannot map files",
                   {.path = std::move(path), .operation = "map"});
  }

  /// Offers the staging buffers to the engine (io_uring registers them so writes from
  /// them skip per-I/O page pinning). Call it before the first transfer; the buffers must
  /// outlive the storage. Optional: false when not used; never an error.
  virtual bool register_buffers(std::span<const std::span<std::byte>> regions) {
    (void)regions;
    return false;
  }
};

}  // namespace corockpt
