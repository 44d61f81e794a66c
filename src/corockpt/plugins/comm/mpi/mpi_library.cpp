#include "corockpt/plugins/comm/mpi/mpi_library.hpp"

#include <condition_variable>
#include <string>
#include <thread>

namespace corockpt::mpi_detail {

namespace {

// The thread that initializes and finalizes MPI (see ensure_initialized), and what it
// reports. Leaked on purpose: it may be stuck in MPI_Init_thread when the process exits.
struct MainThread {
  std::mutex mutex;
  std::condition_variable changed;
  bool initialized = false;  // MPI_Init_thread returned
  int init_code = MPI_SUCCESS;
  int provided = MPI_THREAD_SINGLE;
  bool finalize_wanted = false;
  bool finalized = false;  // MPI_Finalize returned
  int finalize_code = MPI_SUCCESS;
};

MainThread* main_thread = nullptr;  // set once, under lock_mpi()
bool initialized_by_us = false;
bool init_abandoned = false;

MainThread* start_main_thread() {
  auto* state = new MainThread();
  std::thread([state] {
    int provided = MPI_THREAD_SINGLE;
    const int code = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    std::unique_lock lock(state->mutex);
    state->initialized = true;
    state->init_code = code;
    state->provided = provided;
    state->changed.notify_all();
    if (code != MPI_SUCCESS) return;
    state->changed.wait(lock, [state] { return state->finalize_wanted; });
    lock.unlock();
    const int finalize_code = MPI_Finalize();
    lock.lock();
    state->finalized = true;
    state->finalize_code = finalize_code;
    state->changed.notify_all();
  }).detach();
  return state;
}

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

Result<void> ensure_initialized(std::chrono::milliseconds deadline) {
  const ErrorContext context{.operation = "MPI_Init_thread"};
  if (init_abandoned) {
    return fail(Errc::unavailable, "MPI is unusable in this process: its initialization timed out earlier", context);
  }
  if (finalized()) return fail(Errc::unavailable, "MPI was already finalized in this process", context);
  int started = 0;
  MPI_Initialized(&started);
  int provided = MPI_THREAD_SINGLE;
  if (!started) {
    if (main_thread != nullptr) return fail(Errc::unavailable, "MPI failed to initialize earlier in this process", context);
    main_thread = start_main_thread();
    std::unique_lock lock(main_thread->mutex);
    if (!main_thread->changed.wait_for(lock, deadline, [] { return main_thread->initialized; })) {
      init_abandoned = true;
      return fail(Errc::timeout,
                  "MPI_Init_thread did not finish within " + std::to_string(deadline.count()) +
                      " ms: a process of the job did not start, or died before initializing MPI",
                  context);
    }
    if (main_thread->init_code != MPI_SUCCESS) {
      return fail(mpi_error(main_thread->init_code, "MPI_Init_thread").with_operation("MPI_Init_thread"));
    }
    provided = main_thread->provided;
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

Result<void> finalize(std::chrono::milliseconds deadline) {
  if (!initialized_by_us || finalized()) return {};
  std::unique_lock lock(main_thread->mutex);
  main_thread->finalize_wanted = true;
  main_thread->changed.notify_all();
  if (!main_thread->changed.wait_for(lock, deadline, [] { return main_thread->finalized; })) {
    return fail(Errc::timeout,
                "MPI_Finalize did not finish within " + std::to_string(deadline.count()) +
                    " ms: a process of the job may have died after the last collective",
                {.operation = "MPI_Finalize"});
  }
  const int code = main_thread->finalize_code;
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
