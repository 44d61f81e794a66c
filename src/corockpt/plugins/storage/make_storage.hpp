#pragma once
/// @file
/// Choosing a storage plugin by name, with the documented fallback.

#include <memory>
#include <string_view>

#include "corockpt/plugins/storage/storage.hpp"
#include "corockpt/plugins/storage/uring/uring_storage.hpp"
#include "corockpt/runtime/runtime.hpp"

namespace corockpt {

enum class StorageKind {
  automatic,  ///< uring, or posix when io_uring cannot be set up (said once on stderr)
  uring,      ///< uring or an error
  posix,
};

/// "auto", "uring" or "posix". @returns Errc::invalid_argument for anything else.
Result<StorageKind> parse_storage_kind(std::string_view name);

Result<std::unique_ptr<Storage>> make_storage(Runtime& runtime, StorageKind kind, UringOptions uring = {});

}  // namespace corockpt
