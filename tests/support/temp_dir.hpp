#pragma once
// A fresh directory for one test, removed with everything in it at the end; and where to
// make it when a test needs its file system to take (or refuse) O_DIRECT.
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace corockpt::test {

class TempDir {
 public:
  explicit TempDir(std::filesystem::path parent = std::filesystem::temp_directory_path()) {
    std::string pattern = (parent / "corockpt-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed in " + parent.string());
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

/// Whether a new file in `dir` opens with O_DIRECT and takes an aligned 4 KiB write
/// there (some file systems accept the flag and refuse the transfer).
inline bool takes_o_direct(const std::filesystem::path& dir) {
  std::string pattern = (dir / "corockpt-direct-probe-XXXXXX").string();
  const int fd = ::mkstemp(pattern.data());
  if (fd < 0) return false;
  ::close(fd);
  bool works = false;
  const int direct = ::open(pattern.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
  if (direct >= 0) {
    void* block = nullptr;
    if (::posix_memalign(&block, 4096, 4096) == 0) {
      works = ::pwrite(direct, block, 4096, 0) == 4096;
      std::free(block);
    }
    ::close(direct);
  }
  ::unlink(pattern.c_str());
  return works;
}

/// Where a test can make a TempDir whose file system takes O_DIRECT (`direct` true) or
/// refuses it (false): the first such of TMPDIR, /tmp, /var/tmp, /dev/shm and the working
/// directory (the build folder under CTest); nullopt when none is.
inline std::optional<std::filesystem::path> dir_where_o_direct(bool direct) {
  std::vector<std::filesystem::path> candidates;
  if (const char* tmpdir = std::getenv("TMPDIR"); tmpdir != nullptr && *tmpdir != '\0') candidates.emplace_back(tmpdir);
  for (const char* dir : {"/tmp", "/var/tmp", "/dev/shm"}) candidates.emplace_back(dir);
  std::error_code ignored;
  candidates.push_back(std::filesystem::current_path(ignored));
  for (const auto& dir : candidates) {
    if (!std::filesystem::is_directory(dir, ignored) || ::access(dir.c_str(), W_OK) != 0) continue;
    if (takes_o_direct(dir) == direct) return dir;
  }
  return std::nullopt;
}

}  // namespace corockpt::test
