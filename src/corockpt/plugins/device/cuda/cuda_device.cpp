#include "corockpt/plugins/device/cuda/cuda_device.hpp"

#include <cuda_runtime.h>

#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "corockpt/plugins/device/cuda/cuda_error.hpp"
#include "corockpt/runtime/deadline.hpp"
#include "corockpt/runtime/trace.hpp"

namespace corockpt {

namespace {

using cuda_detail::cuda_error;
using cuda_detail::use_device;

using CopyDone = std::shared_ptr<Completion<void>>;

// Queued behind a copy with cudaLaunchHostFunc. It runs on CUDA's callback thread, where
// no CUDA call is allowed: it only fills the completion (thread-safe; the waiter resumes
// on its own executor) and frees its argument.
void CUDART_CB copy_reached(void* argument) {
  std::unique_ptr<CopyDone> done(static_cast<CopyDone*>(argument));
  (*done)->complete(Result<void>{});
}

std::string bytes_text(std::size_t n) { return std::to_string(n) + " bytes"; }

class CudaDevice final : public Device {
 public:
  CudaDevice(Runtime& runtime, CudaDeviceOptions options, cudaStream_t stream, cudaEvent_t fence,
             std::shared_ptr<BufferAllocator> staging)
      : runtime_(runtime), options_(options), stream_(stream), fence_(fence), staging_(std::move(staging)),
        name_("cuda:" + std::to_string(options.device)) {}

  ~CudaDevice() override {
    (void)use_device(options_.device);
    // Queued copies end (and their host functions run) before the stream goes; a broken
    // device's stream may never drain, and is left to CUDA.
    if (!broken_error()) (void)cudaStreamSynchronize(stream_);
    for (cudaEvent_t event : free_events_) (void)cudaEventDestroy(event);
    (void)cudaEventDestroy(fence_);
    (void)cudaStreamDestroy(stream_);
  }

  std::string_view backend() const override { return "cuda"; }
  MemorySpace space() const override { return MemorySpace::cuda; }
  const std::string& name() const override { return name_; }

  Result<DeviceMemory> allocate(std::size_t bytes) override;

  Task<void> copy(CopyDirection direction, std::span<const CopyPiece> pieces) override;

  Result<void> order_after_compute() override;

  std::shared_ptr<BufferAllocator> staging_allocator() override { return staging_; }

 private:
  /// Checks that every piece's sides lie where `direction` says.
  /// @returns whether every host side is page-locked (true when there is none).
  Result<bool> check_pieces(CopyDirection direction, std::span<const CopyPiece> pieces, const std::string& what) const;
  /// Whether `pointer` is memory of this device (false: host memory; device memory of
  /// another GPU is an error).
  Result<bool> on_this_device(const void* pointer, const std::string& what) const;
  /// Queues the copies, their event and their host function on the stream.
  Result<void> enqueue(CopyDirection direction, std::span<const CopyPiece> pieces, cudaEvent_t event,
                       const CopyDone& done);
  Result<cudaEvent_t> take_event();
  void give_back(cudaEvent_t event);

  std::optional<Error> broken_error() const;
  void mark_broken(const Error& why);

  Runtime& runtime_;
  const CudaDeviceOptions options_;
  cudaStream_t stream_;
  cudaEvent_t fence_;  // recorded on the compute stream by order_after_compute
  std::shared_ptr<BufferAllocator> staging_;
  const std::string name_;

  mutable std::mutex mutex_;  // ranks may copy from different threads (workers, io thread)
  std::vector<cudaEvent_t> free_events_;
  std::optional<Error> broken_because_;
};

Result<DeviceMemory> CudaDevice::allocate(std::size_t bytes) {
  if (auto ready = use_device(options_.device); !ready) return fail(ready.error());
  void* memory = nullptr;
  if (cudaError_t code = cudaMalloc(&memory, bytes == 0 ? 1 : bytes); code != cudaSuccess) {
    Error error = cuda_error(code, "cudaMalloc");
    error.message += " (" + bytes_text(bytes) + " on " + name_ + ")";
    return fail(std::move(error));
  }
  const int device = options_.device;
  std::shared_ptr<std::byte> owned(static_cast<std::byte*>(memory), [device](std::byte* p) {
    (void)use_device(device);
    (void)cudaFree(p);
  });
  return DeviceMemory(std::move(owned), bytes, MemorySpace::cuda);
}

Result<void> CudaDevice::order_after_compute() {
  if (auto ready = use_device(options_.device); !ready) return fail(ready.error());
  auto compute = static_cast<cudaStream_t>(options_.compute_stream);
  if (cudaError_t code = cudaEventRecord(fence_, compute); code != cudaSuccess) {
    return fail(cuda_error(code, "cudaEventRecord"));
  }
  // The wait is queued on our stream: nothing blocks here.
  if (cudaError_t code = cudaStreamWaitEvent(stream_, fence_, 0); code != cudaSuccess) {
    return fail(cuda_error(code, "cudaStreamWaitEvent"));
  }
  return {};
}

Result<bool> CudaDevice::on_this_device(const void* pointer, const std::string& what) const {
  cudaPointerAttributes attributes{};
  if (cudaError_t code = cudaPointerGetAttributes(&attributes, pointer); code != cudaSuccess) {
    return fail(cuda_error(code, "cudaPointerGetAttributes"));
  }
  const bool device_memory = attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged;
  if (device_memory && attributes.device != options_.device) {
    return fail(Errc::invalid_argument, what + ": memory of cuda:" + std::to_string(attributes.device) +
                                            ", not of " + name_);
  }
  return device_memory;
}

Result<bool> CudaDevice::check_pieces(CopyDirection direction, std::span<const CopyPiece> pieces,
                                      const std::string& what) const {
  bool all_pinned = true;
  // Page-locked host memory: registered (the staging pool) or cudaHostAlloc'd.
  auto pinned = [](const void* pointer) {
    cudaPointerAttributes attributes{};
    return cudaPointerGetAttributes(&attributes, pointer) == cudaSuccess && attributes.type == cudaMemoryTypeHost;
  };
  for (const CopyPiece& piece : pieces) {
    if (piece.bytes == 0) continue;
    const bool to_on_device = direction != CopyDirection::to_host;
    const bool from_on_device = direction != CopyDirection::to_device;
    auto to = on_this_device(piece.to, what);
    if (!to) return fail(std::move(to.error()));
    auto from = on_this_device(piece.from, what);
    if (!from) return fail(std::move(from.error()));
    auto misplaced = [&](bool should_be_on_device, const char* side) {
      return fail(Errc::invalid_argument, what + ": a piece's " + side + " is " +
                                              (should_be_on_device ? "not memory of " + name_ : "device memory"));
    };
    if (*to != to_on_device) return misplaced(to_on_device, "destination");
    if (*from != from_on_device) return misplaced(from_on_device, "source");
    if (!to_on_device && !pinned(piece.to)) all_pinned = false;
    if (!from_on_device && !pinned(piece.from)) all_pinned = false;
  }
  return all_pinned;
}

Result<void> CudaDevice::enqueue(CopyDirection direction, std::span<const CopyPiece> pieces, cudaEvent_t event,
                                 const CopyDone& done) {
  if (auto ready = use_device(options_.device); !ready) return fail(ready.error());
  const cudaMemcpyKind kind = direction == CopyDirection::to_host     ? cudaMemcpyDeviceToHost
                              : direction == CopyDirection::to_device ? cudaMemcpyHostToDevice
                                                                      : cudaMemcpyDeviceToDevice;
  for (const CopyPiece& piece : pieces) {
    if (piece.bytes == 0) continue;
    if (cudaError_t code = cudaMemcpyAsync(piece.to, piece.from, piece.bytes, kind, stream_); code != cudaSuccess) {
      return fail(cuda_error(code, "cudaMemcpyAsync"));
    }
  }
  if (cudaError_t code = cudaEventRecord(event, stream_); code != cudaSuccess) {
    return fail(cuda_error(code, "cudaEventRecord"));
  }
  auto argument = std::make_unique<CopyDone>(done);
  if (cudaError_t code = cudaLaunchHostFunc(stream_, copy_reached, argument.get()); code != cudaSuccess) {
    return fail(cuda_error(code, "cudaLaunchHostFunc"));
  }
  (void)argument.release();  // copy_reached owns it now
  return {};
}

Task<void> CudaDevice::copy(CopyDirection direction, std::span<const CopyPiece> pieces) {
  const std::string operation(to_string(direction));
  std::size_t total = 0;
  for (const CopyPiece& piece : pieces) total += piece.bytes;
  const std::string what = operation + " of " + bytes_text(total) + " in " + std::to_string(pieces.size()) +
                           " piece(s) on " + name_;
  if (auto broken = broken_error()) co_return fail(std::move(broken->with_operation(operation)));
  if (total == 0) co_return Result<void>{};
  ScopedSpan span(runtime_.tracer(), what, "copy");

  auto pinned = check_pieces(direction, pieces, what);
  if (!pinned) co_return fail(std::move(pinned.error().with_operation(operation)));
  auto event = take_event();
  if (!event) co_return fail(std::move(event.error().with_operation(operation)));

  CopyDone done = Completion<void>::make();
  Result<void> result;
  if (*pinned) {
    result = enqueue(direction, pieces, *event, done);
  } else {
    // cudaMemcpyAsync of pageable memory returns only once the bytes are staged: not on
    // the io thread.
    auto issue = [this, direction, pieces, queued = *event, done] { return enqueue(direction, pieces, queued, done); };
    Task<void> issuing = runtime_.offload(issue);
    result = co_await std::move(issuing);
  }
  if (result) {
    Task<void> waiting = done->wait();
    Task<void> bounded = with_deadline(std::move(waiting), options_.copy_deadline, what);
    result = co_await std::move(bounded);
  }
  if (result) {
    // The stream has passed the event: it reports the copy's own error, if any.
    if (cudaError_t code = cudaEventQuery(*event); code != cudaSuccess) {
      result = fail(cuda_error(code, "cudaMemcpyAsync"));
    }
  }
  if (result) {
    give_back(*event);
    co_return result;
  }
  // Destroying an event still recorded is allowed: CUDA frees it once the stream passes it.
  (void)cudaEventDestroy(*event);
  if (result.error().code == Errc::timeout || result.error().code == Errc::io) mark_broken(result.error());
  co_return fail(std::move(result.error().with_operation(operation)));
}

Result<cudaEvent_t> CudaDevice::take_event() {
  {
    std::lock_guard lock(mutex_);
    if (!free_events_.empty()) {
      cudaEvent_t event = free_events_.back();
      free_events_.pop_back();
      return event;
    }
  }
  if (auto ready = use_device(options_.device); !ready) return fail(ready.error());
  cudaEvent_t event = nullptr;
  if (cudaError_t code = cudaEventCreateWithFlags(&event, cudaEventDisableTiming); code != cudaSuccess) {
    return fail(cuda_error(code, "cudaEventCreateWithFlags"));
  }
  return event;
}

void CudaDevice::give_back(cudaEvent_t event) {
  std::lock_guard lock(mutex_);
  free_events_.push_back(event);
}

std::optional<Error> CudaDevice::broken_error() const {
  std::lock_guard lock(mutex_);
  if (!broken_because_) return std::nullopt;
  return Error{Errc::unavailable, name_ + " is broken after an earlier failure (" + broken_because_->message + ")",
               {}, 0};
}

void CudaDevice::mark_broken(const Error& why) {
  std::lock_guard lock(mutex_);
  if (!broken_because_) broken_because_ = why;
}

}  // namespace

Result<int> cuda_device_count() {
  int count = 0;
  if (cudaError_t code = cudaGetDeviceCount(&count); code != cudaSuccess) {
    Error error = cuda_detail::cuda_error(code, "cudaGetDeviceCount");
    error.code = Errc::unavailable;  // whatever CUDA's reason, there is no GPU to use here
    return fail(std::move(error));
  }
  if (count == 0) return fail(Errc::unavailable, "cudaGetDeviceCount: no CUDA device", {.operation = "cudaGetDeviceCount"});
  return count;
}

Result<std::shared_ptr<Device>> make_cuda_device(Runtime& runtime, CudaDeviceOptions options) {
  auto staging = make_cuda_pinned_allocator(options.device);  // checks the device exists
  if (!staging) return fail(std::move(staging.error()));
  if (auto ready = use_device(options.device); !ready) return fail(ready.error());
  cudaStream_t stream = nullptr;
  if (cudaError_t code = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking); code != cudaSuccess) {
    return fail(cuda_error(code, "cudaStreamCreateWithFlags"));
  }
  cudaEvent_t fence = nullptr;
  if (cudaError_t code = cudaEventCreateWithFlags(&fence, cudaEventDisableTiming); code != cudaSuccess) {
    (void)cudaStreamDestroy(stream);
    return fail(cuda_error(code, "cudaEventCreateWithFlags"));
  }
  return std::shared_ptr<Device>(std::make_shared<CudaDevice>(runtime, options, stream, fence, std::move(*staging)));
}

}  // namespace corockpt
