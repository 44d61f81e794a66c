#include "corockpt/plugins/storage/make_storage.hpp"

#include <atomic>
#include <cstdio>

#include "corockpt/plugins/storage/posix/posix_storage.hpp"

namespace corockpt {

Result<StorageKind> parse_storage_kind(std::string_view name) {
  if (name == "auto") return StorageKind::automatic;
  if (name == "uring") return StorageKind::uring;
  if (name == "posix") return StorageKind::posix;
  return fail(Errc::invalid_argument, "unknown storage '" + std::string(name) + "' (expected auto, uring or posix)");
}

Result<std::unique_ptr<Storage>> make_storage(Runtime& runtime, StorageKind kind, UringOptions uring) {
  if (kind == StorageKind::posix) return make_posix_storage(runtime);
  auto storage = make_uring_storage(runtime, uring);
  if (storage || kind == StorageKind::uring) return storage;
  static std::atomic<bool> said{false};
  if (!said.exchange(true)) {
    std::fprintf(stderr, "corockpt: %s; using the posix storage plugin\n", storage.error().to_string().c_str());
  }
  return make_posix_storage(runtime);
}

}  // namespace corockpt
