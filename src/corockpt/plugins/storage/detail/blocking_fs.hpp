#pragma once
/// @file
/// The blocking file-system calls both storage plugins share (run on the worker pool):
/// open with the O_DIRECT probe, metadata operations, and the error mapping.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "corockpt/plugins/storage/storage.hpp"

namespace corockpt::storage_detail {

Result<File> open_file(const std::string& path, OpenOptions options);
Result<void> make_dir(const std::string& path);
Result<void> rename_path(const std::string& from, const std::string& to);
Result<void> remove_path(const std::string& path);
Result<std::vector<DirEntry>> list_dir(const std::string& dir);
Result<void> fsync_dir(const std::string& path);
Result<std::optional<DirLock>> try_lock_dir(const std::string& path);
Result<std::uint64_t> allocated_bytes(const std::string& path);
Result<MappedBytes> map_file(const std::string& path);
Result<void> truncate_file(const File& file, std::uint64_t size);
Result<void> allocate_file(const File& file, std::uint64_t size);

}  // namespace corockpt::storage_detail
