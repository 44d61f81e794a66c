#pragma once
/// @file
/// The one error shape of corockpt: `Error` (code, message, context) and
/// `Result<T> = std::expected<T, Error>`. Exceptions never cross the public API;
/// functions that can fail return a `Result`.

#include <expected>
#include <optional>
#include <string>
#include <string_view>

namespace corockpt {

/// What went wrong, coarse enough to branch on.
enum class Errc {
  invalid_argument,   ///< the caller asked for something malformed
  not_found,          ///< a file, directory, key or rank that does not exist
  already_exists,     ///< refusing to overwrite
  permission_denied,  ///< EACCES / EPERM
  no_space,           ///< ENOSPC / EDQUOT
  no_memory,          ///< host memory the operation needs is not there (ENOMEM, a failed allocation)
  io,                 ///< EIO and other device failures, short transfers
  timeout,            ///< a deadline passed
  cancelled,          ///< the operation was cancelled
  unavailable,        ///< a facility (io_uring, a GPU, a plugin) is not available here
  corrupt,            ///< data failed a check (checksum, format)
  internal,           ///< a bug or an unexpected exception
};

/// The name of a code, as printed in messages ("no_space").
std::string_view to_string(Errc code);

/// Where an error happened. Empty fields are not printed.
struct ErrorContext {
  std::optional<int> rank;
  std::string fqn;        ///< tensor name, when one is involved
  std::string path;       ///< file or directory, when one is involved
  std::string operation;  ///< what was being done ("write_at", "open", "all_gather")
};

struct Error {
  Errc code = Errc::internal;
  std::string message;
  ErrorContext context;
  int sys_errno = 0;  ///< the system's own code when the error came from a syscall, else 0

  /// One line for people: "no_space: No space left on device [op=write_at path=/dev/full]".
  std::string to_string() const;

  Error& with_path(std::string p) { context.path = std::move(p); return *this; }
  Error& with_operation(std::string op) { context.operation = std::move(op); return *this; }
  Error& with_rank(int r) { context.rank = r; return *this; }
  Error& with_fqn(std::string f) { context.fqn = std::move(f); return *this; }
};

template <class T>
using Result = std::expected<T, Error>;

/// Shorthand for the error branch of a Result: `return fail(Errc::io, "...")`.
inline std::unexpected<Error> fail(Errc code, std::string message, ErrorContext context = {}) {
  return std::unexpected<Error>(Error{code, std::move(message), std::move(context), 0});
}
inline std::unexpected<Error> fail(Error error) { return std::unexpected<Error>(std::move(error)); }

/// An error from a syscall's errno (positive, as in `errno`; io_uring's -res is negated
/// by the caller), mapped to the nearest code and carrying strerror's text.
Error system_error(int err, std::string operation, std::string path = {});

/// The error for an exception caught at the edge of the public API: Errc::no_memory for
/// std::bad_alloc and std::length_error (a failed or impossible allocation), cancelled for
/// an aborted operation, internal otherwise.
Error error_from_exception(std::exception_ptr e);

}  // namespace corockpt
