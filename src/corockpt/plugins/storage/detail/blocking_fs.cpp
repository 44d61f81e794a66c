#include "corockpt/plugins/storage/detail/blocking_fs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/stat.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <memory>

namespace corockpt {

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
    direct_ = other.direct_;
    offset_alignment_ = other.offset_alignment_;
    memory_alignment_ = other.memory_alignment_;
  }
  return *this;
}

void File::close() {
  if (fd_ >= 0) ::close(std::exchange(fd_, -1));
}

Result<void> File::check_transfer(std::uint64_t offset, const void* memory, std::size_t length,
                                  std::string_view operation) const {
  if (fd_ < 0) return fail(Errc::invalid_argument, "file is not open", {.path = path_, .operation = std::string(operation)});
  if (!direct_) return {};
  auto address = reinterpret_cast<std::uintptr_t>(memory);
  if (offset % offset_alignment_ != 0 || length % offset_alignment_ != 0 || address % memory_alignment_ != 0) {
    return fail(Errc::invalid_argument,
                "O_DIRECT transfer must have offset and length multiples of " + std::to_string(offset_alignment_) +
                    " and memory aligned to " + std::to_string(memory_alignment_) + " (offset " +
                    std::to_string(offset) + ", length " + std::to_string(length) + ")",
                {.path = path_, .operation = std::string(operation)});
  }
  return {};
}

namespace storage_detail {

namespace {

int flags_for(OpenMode mode) {
  switch (mode) {
    case OpenMode::read: return O_RDONLY;
    case OpenMode::create: return O_RDWR | O_CREAT | O_EXCL;
    case OpenMode::truncate: return O_RDWR | O_CREAT | O_TRUNC;
    case OpenMode::read_write: return O_RDWR;
  }
  return O_RDONLY;
}

struct DirectAlignment {
  std::uint32_t offset = 4096;
  std::uint32_t memory = 4096;
};

// The filesystem's own O_DIRECT constraints (Linux 6.1+); 4096 for both when it does
// not say, which every filesystem accepts.
DirectAlignment direct_alignment(int fd) {
  struct statx stx {};
  DirectAlignment a;
  if (::syscall(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 && (stx.stx_mask & STATX_DIOALIGN) &&
      stx.stx_dio_offset_align != 0) {
    a.offset = stx.stx_dio_offset_align;
    a.memory = std::max<std::uint32_t>(stx.stx_dio_mem_align, 1);
  }
  return a;
}

// What a file that is not a regular one is, for messages.
const char* kind_of(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISDIR(mode)) return "a directory";
  return "not a regular file";
}

// `fd`'s stat, when it is a regular file; else `fd` closed and the error (naming what it
// is, for a FIFO or a device that would block a read or never end).
Result<struct stat> regular_file_stat(int fd, const std::string& path, const char* operation) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return fail(system_error(err, operation, path));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return fail(Errc::invalid_argument, path + " is " + kind_of(st.st_mode) + ", not a regular file",
                {.path = path, .operation = operation});
  }
  return st;
}

}  // namespace

Result<File> open_file(const std::string& path, OpenOptions options) {
  const int nonblocking = options.regular_only ? O_NONBLOCK : 0;
  int fd = ::open(path.c_str(), flags_for(options.mode) | O_CLOEXEC | nonblocking, 0644);
  if (fd < 0) return fail(system_error(errno, "open", path));
  if (options.regular_only) {
    if (auto regular = regular_file_stat(fd, path, "open"); !regular) return fail(regular.error());
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  }
  if (options.direct == DirectIo::prefer) {
    // Switching O_DIRECT on after open (rather than opening with it) keeps O_EXCL
    // creation exact: a filesystem that refuses O_DIRECT (EINVAL) still has our file.
    int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_DIRECT) == 0) {
      auto a = direct_alignment(fd);
      return File(fd, path, true, a.offset, a.memory);
    }
  }
  return File(fd, path, false, 1, 1);
}

Result<void> make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0) return fail(system_error(errno, "make_dir", path));
  return {};
}

Result<void> rename_path(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) return fail(system_error(errno, "rename", from + " -> " + to));
  return {};
}

Result<void> remove_path(const std::string& path) {
  if (::remove(path.c_str()) != 0) return fail(system_error(errno, "remove", path));
  return {};
}

Result<std::optional<DirLock>> try_lock_dir(const std::string& path) {
  // O_NOFOLLOW: a symlink named like a directory is never locked (nor, then, removed).
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ELOOP || err == ENOTDIR) {
      return fail(Errc::invalid_argument, path + " is not a directory (symlinks are not followed)",
                  {.path = path, .operation = "lock"});
    }
    return fail(system_error(err, "lock", path));
  }
  DirLock lock(fd);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) return std::optional<DirLock>{};
    Error error = system_error(err, "lock", path);
    if (err != EINTR && err != ENOMEM) {
      error.code = Errc::unavailable;
      error.message = "cannot lock directories here (flock: " + error.message + ")";
    }
    return fail(std::move(error));
  }
  // The lock is only worth something while `path` still names the directory locked: one
  // removed or renamed (committed) between the open and the flock is gone from here.
  struct stat held {};
  struct stat named {};
  if (::fstat(fd, &held) != 0 || held.st_nlink == 0 || ::lstat(path.c_str(), &named) != 0 ||
      named.st_dev != held.st_dev || named.st_ino != held.st_ino) {
    return fail(Errc::not_found, path + " was removed or renamed while it was being locked",
                {.path = path, .operation = "lock"});
  }
  return std::optional<DirLock>(std::move(lock));
}

Result<std::uint64_t> allocated_bytes(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return fail(system_error(errno, "stat", path));
  return static_cast<std::uint64_t>(st.st_blocks) * 512;
}

namespace {

// A read-only mapping, unmapped with its last owner.
struct Mapping {
  void* data = nullptr;
  std::size_t size = 0;
  ~Mapping() {
    if (data) ::munmap(data, size);
  }
};

}  // namespace

Result<MappedBytes> map_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
  if (fd < 0) return fail(system_error(errno, "map", path));
  auto regular = regular_file_stat(fd, path, "map");
  if (!regular) return fail(regular.error());
  const struct stat& st = *regular;
  auto mapping = std::make_shared<Mapping>();
  if (st.st_size > 0) {
    void* data = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    if (data == MAP_FAILED) {
      const int error = errno;
      ::close(fd);
      return fail(system_error(error, "map", path));
    }
    mapping->data = data;
    mapping->size = static_cast<std::size_t>(st.st_size);
  }
  ::close(fd);
  const std::string_view bytes(static_cast<const char*>(mapping->data), mapping->size);
  return MappedBytes{bytes, std::move(mapping)};
}

Result<std::vector<DirEntry>> list_dir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return fail(system_error(errno, "list", dir));
  std::vector<DirEntry> entries;
  errno = 0;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    bool is_dir = e->d_type == DT_DIR;
    if (e->d_type == DT_UNKNOWN) {
      struct stat st {};
      is_dir = ::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
    }
    entries.push_back({std::move(name), is_dir});
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) return fail(system_error(err, "list", dir));
  std::sort(entries.begin(), entries.end(), [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
  return entries;
}

Result<void> fsync_dir(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return fail(system_error(errno, "fsync_dir", path));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return fail(system_error(err, "fsync_dir", path));
  return {};
}

Result<void> truncate_file(const File& file, std::uint64_t size) {
  if (::ftruncate(file.fd(), static_cast<off_t>(size)) != 0) return fail(system_error(errno, "truncate", file.path()));
  return {};
}

Result<void> allocate_file(const File& file, std::uint64_t size) {
  if (size == 0) return {};
  if (::fallocate(file.fd(), 0, 0, static_cast<off_t>(size)) != 0) {
    return fail(system_error(errno, "allocate", file.path()));
  }
  return {};
}

}  // namespace storage_detail
}  // namespace corockpt
