#include "corockpt/plugins/comm/mpi/mpi_library.hpp"

#include <string>

namespace corockpt::mpi_detail {

namespace {

bool initialized_by_us = false;

std::string thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE: return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED: return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED: return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE: return "MPI_THREAD_MULTIPLE";
  }
  return "thread level " + std::to_string(level);
}

}  // namespace

std::unique_lock<std::mutex> lock_mpi() {
  static std::mutex mutex;
  return std::unique_lock(mutex);
}

bool finalized() {
  int done = 0;
  MPI_Finalized(&done);
  return done != 0;
}

Result<void> ensure_initialized() {
  const ErrorContext context{.operation = "MPI_Init_thread"};
  if (finalized()) return fail(Errc::unavailable, "MPI was already finalized in this process", context);
  int started = 0;
  MPI_Initialized(&started);
  int provided = MPI_THREAD_SINGLE;
  if (!started) {
    int code = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    if (code != MPI_SUCCESS) return fail(mpi_error(code, "MPI_Init_thread").with_operation("MPI_Init_thread"));
    initialized_by_us = true;
  } else {
    MPI_Query_thread(&provided);
  }
  if (provided < MPI_THREAD_SERIALIZED) {
    return fail(Errc::unavailable,
                "MPI granted " + thread_level_name(provided) +
                    "; corockpt calls MPI from its io thread and needs at least MPI_THREAD_SERIALIZED",
                context);
  }
  return {};
}

Result<void> finalize() {
  if (!initialized_by_us || finalized()) return {};
  int code = MPI_Finalize();
  if (code != MPI_SUCCESS) return fail(mpi_error(code, "MPI_Finalize").with_operation("MPI_Finalize"));
  return {};
}

OwnedComm::~OwnedComm() {
  auto mpi = lock_mpi();
  if (!finalized()) MPI_Comm_free(&comm_);
}

Error mpi_error(int code, std::string_view what) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
  int error_class = MPI_ERR_OTHER;
  MPI_Error_class(code, &error_class);
  Errc errc = Errc::io;
  switch (error_class) {
    case MPI_ERR_BUFFER:
    case MPI_ERR_COUNT:
    case MPI_ERR_TYPE:
    case MPI_ERR_TAG:
    case MPI_ERR_RANK:
    case MPI_ERR_ROOT:
    case MPI_ERR_ARG:
    case MPI_ERR_TRUNCATE:
      errc = Errc::invalid_argument;
      break;
    default:
      break;
  }
  std::string message = std::string(what) + ": MPI error: ";
  message += length > 0 ? std::string(text, static_cast<std::size_t>(length)) : "code " + std::to_string(code);
  return Error{errc, std::move(message), {}, 0};
}

}  // namespace corockpt::mpi_detail
