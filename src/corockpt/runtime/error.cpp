#include "corockpt/runtime/error.hpp"

#include <asio/error.hpp>
#include <cerrno>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>
#include <system_error>

namespace corockpt {

std::string_view to_string(Errc code) {
  switch (code) {
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::not_found: return "not_found";
    case Errc::already_exists: return "already_exists";
    case Errc::permission_denied: return "permission_denied";
    case Errc::no_space: return "no_space";
    case Errc::no_memory: return "no_memory";
    case Errc::io: return "io";
    case Errc::timeout: return "timeout";
    case Errc::cancelled: return "cancelled";
    case Errc::unavailable: return "unavailable";
    case Errc::corrupt: return "corrupt";
    case Errc::internal: return "internal";
  }
  return "unknown";
}

std::string Error::to_string() const {
  std::string out(corockpt::to_string(code));
  out += ": ";
  out += message;
  std::string ctx;
  auto add = [&ctx](std::string_view key, std::string_view value) {
    if (value.empty()) return;
    if (!ctx.empty()) ctx += ' ';
    ctx += key;
    ctx += '=';
    ctx += value;
  };
  add("op", context.operation);
  add("path", context.path);
  add("fqn", context.fqn);
  if (context.rank) add("rank", std::to_string(*context.rank));
  if (!ctx.empty()) out += " [" + ctx + "]";
  return out;
}

static Errc code_for_errno(int err) {
  switch (err) {
    case ENOSPC:
    case EDQUOT: return Errc::no_space;
    case ENOMEM: return Errc::no_memory;
    case EACCES:
    case EPERM:
    case EROFS: return Errc::permission_denied;
    case ENOENT:
    case ENOTDIR: return Errc::not_found;
    case EEXIST:
    case ENOTEMPTY: return Errc::already_exists;
    case ETIMEDOUT: return Errc::timeout;
    case ECANCELED: return Errc::cancelled;
    case EINVAL:
    case EBADF:
    case EISDIR: return Errc::invalid_argument;
    case ENOSYS:
    case EOPNOTSUPP: return Errc::unavailable;
    default: return Errc::io;
  }
}

Error system_error(int err, std::string operation, std::string path) {
  Error e{code_for_errno(err), std::strerror(err), {}, err};
  e.context.operation = std::move(operation);
  e.context.path = std::move(path);
  return e;
}

Error error_from_exception(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::system_error& se) {
    if (se.code() == asio::error::operation_aborted) {
      return Error{Errc::cancelled, "operation cancelled", {}, ECANCELED};
    }
    return Error{Errc::internal, se.what(), {}, 0};
  } catch (const std::bad_alloc& ex) {
    // Any allocation that fails is the machine's memory, never a bug of ours to report.
    return Error{Errc::no_memory, std::string("out of memory: an allocation failed (") + ex.what() + ")", {}, ENOMEM};
  } catch (const std::length_error& ex) {
    // A container asked for more elements than can exist: a size no memory can hold.
    return Error{Errc::no_memory, std::string("an allocation larger than can exist (") + ex.what() + ")", {}, ENOMEM};
  } catch (const std::exception& ex) {
    return Error{Errc::internal, ex.what(), {}, 0};
  } catch (...) {
    return Error{Errc::internal, "unknown exception", {}, 0};
  }
}

}  // namespace corockpt
