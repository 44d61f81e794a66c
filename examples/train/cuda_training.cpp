#include "examples/train/cuda_training.hpp"

#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

#include "examples/train/cuda_kernels.hpp"
#include "examples/train/synthetic_training.hpp"
#include "corockpt/plugins/device/cuda/cuda_device.hpp"

namespace corockpt::example {

namespace {

std::unexpected<Error> cuda_failed(int code, const std::string& call) {
  return fail(Errc::io, call + ": " + cuda_kernels::error_text(code), {.operation = call});
}

// Kernels and stream calls need the rank's GPU current on the calling thread.
Result<void> use(int ordinal) {
  if (cudaError_t code = cudaSetDevice(ordinal); code != cudaSuccess) return cuda_failed(code, "cudaSetDevice");
  return {};
}

class CudaGpuRank final : public GpuRank {
 public:
  CudaGpuRank(int ordinal, int sms) : ordinal_(ordinal), sms_(sms) {}

  ~CudaGpuRank() override {
    (void)use(ordinal_);
    if (compute_) (void)cudaStreamSynchronize(compute_);
    device_.reset();  // its stream drains; it orders after compute_ (the last user)
    if (scratch_) (void)cudaFree(scratch_);
    if (compute_) (void)cudaStreamDestroy(compute_);
  }

  Result<void> open(Runtime& runtime) {
    if (auto ok = use(ordinal_); !ok) return ok;
    // Non-blocking: it does not wait for the legacy default stream (another library's work).
    if (cudaError_t code = cudaStreamCreateWithFlags(&compute_, cudaStreamNonBlocking); code != cudaSuccess) {
      return cuda_failed(code, "cudaStreamCreateWithFlags");
    }
    const std::size_t scratch_bytes = static_cast<std::size_t>(sms_) * cuda_kernels::busy_threads * sizeof(float);
    if (cudaError_t code = cudaMalloc(reinterpret_cast<void**>(&scratch_), scratch_bytes); code != cudaSuccess) {
      return cuda_failed(code, "cudaMalloc");
    }
    cudaDeviceProp properties{};
    if (cudaError_t code = cudaGetDeviceProperties(&properties, ordinal_); code != cudaSuccess) {
      return cuda_failed(code, "cudaGetDeviceProperties");
    }
    CudaDeviceOptions options{.device = ordinal_, .compute_stream = compute_};
    auto device = make_cuda_device(runtime, options);
    if (!device) return fail(std::move(device.error()));
    device_ = std::move(*device);
    description_ = std::string(properties.name) + " (" + device_->name() + ")";
    return {};
  }

  const std::shared_ptr<Device>& device() const override { return device_; }
  const std::string& description() const override { return description_; }
  void* compute_stream() const override { return compute_; }
  int ordinal() const override { return ordinal_; }

  Result<void> forward_backward(double milliseconds) override {
    if (auto ok = use(ordinal_); !ok) return ok;
    const auto nanoseconds = static_cast<std::int64_t>(milliseconds * 1e6);
    if (int code = cuda_kernels::launch_busy(scratch_, sms_, nanoseconds, compute_); code != 0) {
      return cuda_failed(code, "the forward/backward kernel");
    }
    return {};
  }

  Result<void> add(std::span<float> values, float value) override {
    if (auto ok = use(ordinal_); !ok) return ok;
    if (int code = cuda_kernels::launch_add(values.data(), static_cast<std::int64_t>(values.size()), value, compute_);
        code != 0) {
      return cuda_failed(code, "the add kernel");
    }
    return {};
  }

  Result<void> copy_to_host(std::span<std::byte> host, std::span<const std::byte> device_bytes) override {
    if (host.size() != device_bytes.size()) return fail(Errc::invalid_argument, "copy_to_host: unequal sizes");
    if (host.empty()) return {};
    if (auto ok = use(ordinal_); !ok) return ok;
    if (cudaError_t code =
            cudaMemcpyAsync(host.data(), device_bytes.data(), host.size(), cudaMemcpyDeviceToHost, compute_);
        code != cudaSuccess) {
      return cuda_failed(code, "cudaMemcpyAsync");
    }
    return {};
  }

  Result<void> synchronize() override {
    if (auto ok = use(ordinal_); !ok) return ok;
    if (cudaError_t code = cudaStreamSynchronize(compute_); code != cudaSuccess) {
      return cuda_failed(code, "cudaStreamSynchronize");
    }
    return {};
  }

 private:
  const int ordinal_;
  const int sms_;
  cudaStream_t compute_ = nullptr;
  float* scratch_ = nullptr;
  std::shared_ptr<Device> device_;
  std::string description_;
};

Result<cuda_kernels::ElementType> element_type(DType dtype, const std::string& fqn) {
  if (dtype == DType::float32) return cuda_kernels::ElementType::float32;
  if (dtype == DType::bfloat16) return cuda_kernels::ElementType::bfloat16;
  return fail(Errc::invalid_argument,
              "the cuda training kernels handle float32 and bfloat16 params, not " + std::string(to_string(dtype)),
              {.fqn = fqn});
}

class KernelTrainer final : public CudaTrainer {
 public:
  KernelTrainer(Model& model, GpuRank& gpu, TrainingPieces trained, float* grads)
      : model_(model), gpu_(gpu), trained_(std::move(trained)), grads_(grads) {}
  ~KernelTrainer() override {
    (void)use(gpu_.ordinal());
    (void)cudaStreamSynchronize(static_cast<cudaStream_t>(gpu_.compute_stream()));  // kernels may read grads_
    if (grads_) (void)cudaFree(grads_);
  }

  Result<void> backward(std::int64_t step) override {
    if (auto ok = use(gpu_.ordinal()); !ok) return ok;
    for (const TrainingPiece& p : trained_.pieces) {
      if (int code = cuda_kernels::launch_synthetic_gradient(grads_ + p.grad_at, p.name_hash, p.first_index, p.count,
                                                             step, gpu_.compute_stream());
          code != 0) {
        return cuda_failed(code, "the gradient kernel");
      }
    }
    return {};
  }

  Result<void> optimizer_step(std::optional<std::uint32_t> unit) override {
    if (auto ok = use(gpu_.ordinal()); !ok) return ok;
    const OptimizerSpec& opt = *model_.spec().optimizer;
    for (std::size_t i = 0; i < trained_.slots.size(); ++i) {  // as SyntheticTrainer: every param
      if (!unit || trained_.slot_units[i] == *unit) trained_.slots[i]->step += 1;
    }
    for (const TrainingPiece& p : trained_.pieces) {
      if (unit && p.unit != *unit) continue;
      const AdamStepScalars scalars = adam_step_scalars(opt, p.slot->step);
      auto type = element_type(p.dtype, p.fqn);
      if (!type) return fail(type.error());
      if (int code = cuda_kernels::launch_adam(p.value, p.exp_avg, p.exp_avg_sq, *type, grads_ + p.grad_at, p.count,
                                               scalars, gpu_.compute_stream());
          code != 0) {
        return cuda_failed(code, "the Adam kernel");
      }
    }
    return {};
  }

 private:
  Model& model_;
  GpuRank& gpu_;
  TrainingPieces trained_;
  float* grads_;
};

}  // namespace

Result<int> gpu_for_rank(int local_rank) {
  auto count = cuda_device_count();
  if (!count) return fail(std::move(count.error()));
  return local_rank % *count;
}

Result<std::unique_ptr<GpuRank>> make_gpu_rank(Runtime& runtime, int ordinal) {
  if (auto ok = use(ordinal); !ok) return fail(ok.error());
  int sms = 0;
  if (cudaError_t code = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, ordinal); code != cudaSuccess) {
    return cuda_failed(code, "cudaDeviceGetAttribute");
  }
  auto gpu = std::make_unique<CudaGpuRank>(ordinal, sms);
  if (auto opened = gpu->open(runtime); !opened) return fail(opened.error());
  return std::unique_ptr<GpuRank>(std::move(gpu));
}

Result<std::unique_ptr<CudaTrainer>> make_cuda_trainer(Model& model, GpuRank& gpu) {
  if (!model.spec().optimizer) return fail(Errc::invalid_argument, "the model has no optimizer to train with");
  TrainingPieces trained = training_pieces(model);
  for (const TrainingPiece& p : trained.pieces) {
    if (auto type = element_type(p.dtype, p.fqn); !type) return fail(type.error());
  }
  if (auto ok = use(gpu.ordinal()); !ok) return fail(ok.error());
  float* grads = nullptr;
  if (trained.gradients > 0) {
    if (cudaError_t code = cudaMalloc(reinterpret_cast<void**>(&grads), trained.gradients * sizeof(float));
        code != cudaSuccess) {
      return cuda_failed(code, "cudaMalloc");
    }
  }
  return std::unique_ptr<CudaTrainer>(std::make_unique<KernelTrainer>(model, gpu, std::move(trained), grads));
}

}  // namespace corockpt::example
