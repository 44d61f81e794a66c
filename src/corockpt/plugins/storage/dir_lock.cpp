#include "corockpt/plugins/storage/dir_lock.hpp"

#include <unistd.h>

namespace corockpt {

DirLock& DirLock::operator=(DirLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

// Closing the only descriptor of the open file description releases the flock.
DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace corockpt
