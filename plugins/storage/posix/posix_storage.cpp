#include "plugins/storage/posix/posix_storage.hpp"

#include <unistd.h>

#include <cerrno>

#include "plugins/storage/detail/blocking_fs.hpp"

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

  Task<File> open(std::string path, OpenOptions options) override {
    co_return co_await runtime_.offload([path = std::move(path), options] { return fs::open_file(path, options); });
  }

  Task<void> write_at(File& file, std::uint64_t offset, std::span<const std::byte> data) override {
    if (auto ok = file.check_transfer(offset, data.data(), data.size(), "write_at"); !ok) co_return ok;
    co_return co_await runtime_.offload(
        [fd = file.fd(), path = file.path(), offset, data] { return pwrite_all(fd, path, offset, data); });
  }

  Task<std::size_t> read_at(File& file, std::uint64_t offset, std::span<std::byte> data) override {
    if (auto ok = file.check_transfer(offset, data.data(), data.size(), "read_at"); !ok) co_return fail(ok.error());
    co_return co_await runtime_.offload(
        [fd = file.fd(), path = file.path(), offset, data] { return pread_full(fd, path, offset, data); });
  }

  Task<void> fsync(File& file) override {
    co_return co_await runtime_.offload([fd = file.fd(), path = file.path()]() -> Result<void> {
      if (::fsync(fd) != 0) return fail(system_error(errno, "fsync", path));
      return {};
    });
  }

  Task<void> truncate(File& file, std::uint64_t size) override {
    co_return co_await runtime_.offload([&file, size] { return fs::truncate_file(file, size); });
  }

  Task<void> make_dir(std::string path) override {
    co_return co_await runtime_.offload([path = std::move(path)] { return fs::make_dir(path); });
  }

  Task<void> rename(std::string from, std::string to) override {
    co_return co_await runtime_.offload(
        [from = std::move(from), to = std::move(to)] { return fs::rename_path(from, to); });
  }

  Task<void> remove(std::string path) override {
    co_return co_await runtime_.offload([path = std::move(path)] { return fs::remove_path(path); });
  }

  Task<std::vector<DirEntry>> list(std::string dir) override {
    co_return co_await runtime_.offload([dir = std::move(dir)] { return fs::list_dir(dir); });
  }

  Task<void> fsync_dir(std::string path) override {
    co_return co_await runtime_.offload([path = std::move(path)] { return fs::fsync_dir(path); });
  }

 private:
  Runtime& runtime_;
};

}  // namespace

std::unique_ptr<Storage> make_posix_storage(Runtime& runtime) { return std::make_unique<PosixStorage>(runtime); }

}  // namespace corockpt
