// The example's kernels. Built with --fmad=false: the host code computes a * b + c with
// two roundings, and so must we (see cuda_kernels.hpp).
#include "examples/train/cuda_kernels.hpp"

#include <cuda_runtime.h>

namespace corockpt::example::cuda_kernels {

namespace {

constexpr int threads = 256;
constexpr std::int64_t max_blocks = 1 << 16;  // the kernels loop over the rest

int blocks_for(std::int64_t count) {
  const std::int64_t blocks = (count + threads - 1) / threads;
  return static_cast<int>(blocks < max_blocks ? blocks : max_blocks);
}

__device__ std::int64_t first_element() { return static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ std::int64_t element_stride() { return static_cast<std::int64_t>(gridDim.x) * blockDim.x; }

// synthetic_training.cpp's synthetic_gradient, expression for expression.
__device__ float synthetic_gradient(std::uint32_t name_hash, std::int64_t index, std::int64_t step) {
  const std::uint64_t mixed = name_hash + static_cast<std::uint64_t>(index) * 2654435761u +
                              static_cast<std::uint64_t>(step) * 40503u;
  return static_cast<float>(static_cast<std::int64_t>(mixed % 2001) - 1000) / 4096.0f;
}

// ckpt/dtype.cpp's bfloat16 conversions: round to nearest even, c10's quiet NaN.
__device__ float load(const void* base, std::int64_t i, ElementType type) {
  if (type == ElementType::float32) return static_cast<const float*>(base)[i];
  const std::uint32_t bits = static_cast<const std::uint16_t*>(base)[i];
  return __uint_as_float(bits << 16);
}

__device__ void store(void* base, std::int64_t i, ElementType type, float value) {
  if (type == ElementType::float32) {
    static_cast<float*>(base)[i] = value;
    return;
  }
  std::uint16_t out = 0x7FC0;
  if (!isnan(value)) {
    const std::uint32_t bits = __float_as_uint(value);
    out = static_cast<std::uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
  }
  static_cast<std::uint16_t*>(base)[i] = out;
}

__global__ void synthetic_gradient_kernel(float* grad, std::uint32_t name_hash, std::int64_t first_index,
                                          std::int64_t count, std::int64_t step) {
  for (std::int64_t i = first_element(); i < count; i += element_stride()) {
    grad[i] = synthetic_gradient(name_hash, first_index + i, step);
  }
}

// SyntheticTrainer::optimizer_step's loop body; sqrtf and / are IEEE (no fast math).
__global__ void adam_kernel(void* value, void* exp_avg, void* exp_avg_sq, ElementType type, const float* g,
                            std::int64_t count, AdamStepScalars s) {
  for (std::int64_t i = first_element(); i < count; i += element_stride()) {
    float param = load(value, i, type);
    const float grad = g[i] + s.decay * param;
    float m = load(exp_avg, i, type);
    float v = load(exp_avg_sq, i, type);
    m = m + (grad - m) * (1 - s.beta1);
    v = v * s.beta2 + (1 - s.beta2) * grad * grad;
    const float denom = sqrtf(v) / s.bias2_sqrt + s.eps;
    param = param - s.step_size * (m / denom);
    store(value, i, type, param);
    store(exp_avg, i, type, m);
    store(exp_avg_sq, i, type, v);
  }
}

__device__ std::uint64_t global_nanoseconds() {
  std::uint64_t now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  return now;
}

__global__ void busy_kernel(float* scratch, std::int64_t nanoseconds) {
  __shared__ std::uint64_t end;
  if (threadIdx.x == 0) end = global_nanoseconds() + static_cast<std::uint64_t>(nanoseconds);
  __syncthreads();
  float a = 1.0f + threadIdx.x * 1e-6f;
  do {
    // Explicit FMAs (--fmad=false only stops contraction), a chain the compiler keeps.
    for (int k = 0; k < 256; ++k) a = __fmaf_rn(a, 0.999999f, 1e-6f);
  } while (global_nanoseconds() < end);
  scratch[static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x] = a;
}

__global__ void add_kernel(float* data, std::int64_t count, float value) {
  for (std::int64_t i = first_element(); i < count; i += element_stride()) data[i] += value;
}

int launched() { return static_cast<int>(cudaGetLastError()); }

}  // namespace

int launch_synthetic_gradient(float* grad, std::uint32_t name_hash, std::int64_t first_index, std::int64_t count,
                              std::int64_t step, void* stream) {
  if (count <= 0) return 0;  // an empty grid is a launch error
  synthetic_gradient_kernel<<<blocks_for(count), threads, 0, static_cast<cudaStream_t>(stream)>>>(
      grad, name_hash, first_index, count, step);
  return launched();
}

int launch_adam(void* value, void* exp_avg, void* exp_avg_sq, ElementType type, const float* grad, std::int64_t count,
                AdamStepScalars scalars, void* stream) {
  if (count <= 0) return 0;
  adam_kernel<<<blocks_for(count), threads, 0, static_cast<cudaStream_t>(stream)>>>(value, exp_avg, exp_avg_sq, type,
                                                                                     grad, count, scalars);
  return launched();
}

int launch_busy(float* scratch, int blocks, std::int64_t nanoseconds, void* stream) {
  if (blocks <= 0 || nanoseconds <= 0) return 0;
  busy_kernel<<<blocks, busy_threads, 0, static_cast<cudaStream_t>(stream)>>>(scratch, nanoseconds);
  return launched();
}

int launch_add(float* data, std::int64_t count, float value, void* stream) {
  if (count <= 0) return 0;
  add_kernel<<<blocks_for(count), threads, 0, static_cast<cudaStream_t>(stream)>>>(data, count, value);
  return launched();
}

const char* error_text(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // namespace corockpt::example::cuda_kernels
