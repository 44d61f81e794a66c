#pragma once
/// @file
/// The synthetic training (synthetic_training.hpp) on a GPU: a rank's streams and cuda
/// Device (`GpuRank`) and the training's steps as kernels on device memory
/// (`CudaTrainer`), bit-identical to SyntheticTrainer's. This header includes no CUDA
/// header; when corockpt is built without CUDA or without nvcc, every factory here
/// returns Errc::unavailable saying so (cuda_training_unavailable.cpp).
///
/// Ordering: every kernel runs on the rank's compute stream, the device's
/// `CudaDeviceOptions::compute_stream`. `AsyncCheckpointer::async_save` orders the
/// snapshot's copies after the work queued when it is called (the optimizer step it
/// saves), so they overlap the next step's forward/backward. The training loop waits for
/// the snapshot (the fence) before queuing the next optimizer step, as on the host.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "corockpt/ckpt/model.hpp"
#include "corockpt/plugins/device/device.hpp"
#include "corockpt/runtime/runtime.hpp"

namespace corockpt::example {

/// The GPU for the rank of local index `local_rank` (its rank on this node):
/// `local_rank % cuda_device_count()`.
/// @returns Errc::unavailable with the reason when there is no usable GPU or corockpt was
///   built without CUDA.
Result<int> gpu_for_rank(int local_rank);

class GpuRank {
 public:
  virtual ~GpuRank() = default;

  /// The cuda Device snapshots, loads and move_to copy through. Destroy every user of it
  /// (checkpointers, models' device memory) before the GpuRank.
  virtual const std::shared_ptr<Device>& device() const = 0;
  /// For the header line: "NVIDIA H100 80GB HBM3 (cuda:0)".
  virtual const std::string& description() const = 0;

  /// Queues forward/backward's stand-in: every SM busy for `milliseconds`.
  virtual Result<void> forward_backward(double milliseconds) = 0;
  /// Queues values[i] += value on device memory (the benchmark's optimizer pass).
  virtual Result<void> add(std::span<float> values, float value) = 0;
  /// Queues a copy of device memory into host memory (pinned, best) on the compute stream.
  virtual Result<void> copy_to_host(std::span<std::byte> host, std::span<const std::byte> device_bytes) = 0;
  /// Waits for the work queued on the compute stream; reports a kernel's failure.
  virtual Result<void> synchronize() = 0;

  /// The compute stream (a cudaStream_t), for CudaTrainer.
  virtual void* compute_stream() const = 0;
  virtual int ordinal() const = 0;
};

/// Makes the compute stream and the cuda Device of GPU
/// `ordinal`. `runtime` must outlive it.
/// @returns Errc::unavailable without CUDA or the GPU, the failing CUDA call otherwise.
Result<std::unique_ptr<GpuRank>> make_gpu_rank(Runtime& runtime, int ordinal);

/// SyntheticTrainer on a model whose params and Adam moments lie in `gpu`'s memory
/// (Model::move_to, or a load through LoadOptions::device): the same gradients and Adam
/// updates, as kernels queued on the compute stream; float32 and bfloat16 params.
class CudaTrainer {
 public:
  virtual ~CudaTrainer() = default;
  /// Queues the gradients of every local element for `step` (1-based).
  virtual Result<void> backward(std::int64_t step) = 0;
  /// Steps every param's count, queues Adam's update; with `unit`, that unit's only.
  virtual Result<void> optimizer_step(std::optional<std::uint32_t> unit = std::nullopt) = 0;
};

/// @returns Errc::invalid_argument naming a param of a dtype the kernels do not handle,
///   Errc::unavailable without CUDA, the gradients' allocation error.
Result<std::unique_ptr<CudaTrainer>> make_cuda_trainer(Model& model, GpuRank& gpu);

}  // namespace corockpt::example
