#pragma once
/// @file
/// The directory half of the commit protocol, shared by save and consolidate: build a
/// result in a fresh `<dir>.tmp-<id>` next to it, locked as long as it is written, then
/// make it appear whole under its name (fsync the directory, rename, fsync the parent),
/// or remove it after a failure.

#include <string>

#include "corockpt/ckpt/checkpoint_io.hpp"
#include "corockpt/ckpt/temporary_directory.hpp"

namespace corockpt::detail {

/// "a/b/" -> "a/b" ("/" stays "/").
std::string strip_trailing_slashes(std::string path);

/// The directory holding `path` ("." for a bare name).
std::string parent_of(const std::string& path);

/// Refuses an existing `dir` (Errc::already_exists: results are never overwritten in
/// place), creates its parent and the parent's missing ancestors, removes the leftovers
/// `<dir>.tmp-*` nobody owns (temporary_directory.hpp), and creates
/// `<dir>.tmp-<random id>` with its lock held.
/// @returns the temporary directory, its lock and the leftovers removed.
Task<TemporaryDirectory> make_temporary_directory(CheckpointIo io, std::string dir);

/// Creates `path` holding `text` and fsyncs it.
Task<void> write_durable_file(CheckpointIo io, std::string path, std::string text);

/// fsync `tmp`, rename it to `dir`, fsync the parent.
Task<void> commit_directory(CheckpointIo io, std::string tmp, std::string dir);

/// Removes `dir` and the files in it (best effort: the first error is returned).
Task<void> remove_directory(CheckpointIo io, std::string dir);

}  // namespace corockpt::detail
