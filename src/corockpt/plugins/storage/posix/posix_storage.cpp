#include "corockpt/plugins/storage/posix/posix_storage.hpp"

#include <unistd.h>

#include <cerrno>

#include "corockpt/plugins/storage/detail/blocking_fs.hpp"

namespace corockpt {

namespace {

namespace fs = storage_detail;

Result<void> pwrite_all(int fd, const std::string& path, std::uint64_t offset, std::span<const std::byte> data) {
  while (!data.empty()) {
    ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(system_error(errno, "write_at", path));
    }
    if (n == 0) return fail(Errc::io, "write made no progress", {.path = path, .operation = "write_at"});
    data = data.subspan(static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
  return {};
}

Result<std::size_t> pread_full(int fd, const std::string& path, std::uint64_t offset, std::span<std::byte> data) {
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::pread(fd, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(system_error(errno, "read_at", path));
    }
    if (n == 0) break;  // end of file
    done += static_cast<std::size_t>(n);
  }
  return done;
}

class PosixStorage final : public Storage {
 public:
  explicit PosixStorage(Runtime& runtime) : runtime_(runtime) {}

  std::string_view name() const override { return "posix"; }

  // Every operation is a plain function returning the offloaded task, not a coroutine:
  // nothing of theirs lives across a suspension, and GCC 12 mishandles temporaries
  // with destructors inside co_await expressions.
  Task<File> open(std::string path, OpenOptions options) override {
    return runtime_.offload([p = std::move(path), options] { return fs::open_file(p, options); });
  }

  Task<void> write_at(File& file, std::uint64_t offset, std::span<const std::byte> data) override {
    return runtime_.offload([check = file.check_transfer(offset, data.data(), data.size(), "write_at"),
                             fd = file.fd(), p = file.path(), at = offset, bytes = data,
                             &tracer = runtime_.tracer()]() -> Result<void> {
      if (!check) return check;
      ScopedSpan span(tracer, "write_at", "write");
      return pwrite_all(fd, p, at, bytes);
    });
  }

  Task<std::size_t> read_at(File& file, std::uint64_t offset, std::span<std::byte> data) override {
    return runtime_.offload([check = file.check_transfer(offset, data.data(), data.size(), "read_at"),
                             fd = file.fd(), p = file.path(), at = offset, bytes = data,
                             &tracer = runtime_.tracer()]() -> Result<std::size_t> {
      if (!check) return fail(check.error());
      ScopedSpan span(tracer, "read_at", "read");
      return pread_full(fd, p, at, bytes);
    });
  }

  Task<void> fsync(File& file) override {
    return runtime_.offload([fd = file.fd(), p = file.path(), &tracer = runtime_.tracer()]() -> Result<void> {
      ScopedSpan span(tracer, "fsync", "write");
      if (::fsync(fd) != 0) return fail(system_error(errno, "fsync", p));
      return {};
    });
  }

  Task<void> truncate(File& file, std::uint64_t size) override {
    return runtime_.offload([&file, size] { return fs::truncate_file(file, size); });
  }

  Task<void> allocate(File& file, std::uint64_t size) override {
    return runtime_.offload([&file, size] { return fs::allocate_file(file, size); });
  }

  Task<void> make_dir(std::string path) override {
    return runtime_.offload([p = std::move(path)] { return fs::make_dir(p); });
  }

  Task<void> rename(std::string from, std::string to) override {
    return runtime_.offload([f = std::move(from), t = std::move(to)] { return fs::rename_path(f, t); });
  }

  Task<void> remove(std::string path) override {
    return runtime_.offload([p = std::move(path)] { return fs::remove_path(p); });
  }

  Task<std::vector<DirEntry>> list(std::string dir) override {
    return runtime_.offload([d = std::move(dir)] { return fs::list_dir(d); });
  }
  Task<std::optional<DirLock>> try_lock_dir(std::string path) override {
    return runtime_.offload([p = std::move(path)] { return fs::try_lock_dir(p); });
  }
  Task<MappedBytes> map_file(std::string path) override {
    return runtime_.offload([p = std::move(path)] { return fs::map_file(p); });
  }
  Task<std::uint64_t> allocated_bytes(std::string path) override {
    return runtime_.offload([p = std::move(path)] { return fs::allocated_bytes(p); });
  }

  Task<void> fsync_dir(std::string path) override {
    return runtime_.offload([p = std::move(path)] { return fs::fsync_dir(p); });
  }

 private:
  Runtime& runtime_;
};

}  // namespace

std::unique_ptr<Storage> make_posix_storage(Runtime& runtime) { return std::make_unique<PosixStorage>(runtime); }

}  // namespace corockpt
