#pragma once
/// @file
/// The example's GPU kernels (cuda_kernels.cu). nvcc builds them with --fmad=false and
/// IEEE division and square root, so their float32 results equal the host code's
/// (synthetic_training.cpp, which GCC builds without FMA contraction) bit for bit: a run
/// resumed on the CPU continues a GPU run's trajectory exactly.
///
/// A plain header: no CUDA and no corockpt library header (only the plain
/// adam_scalars.hpp), so code built by GCC includes it, and nvcc includes it too.
/// Every launch queues its work on `stream` (a cudaStream_t) of the calling thread's
/// current device and returns the launch's cudaError_t as an int: 0 when queued
/// (`error_text` names the others). Errors of the running kernel show later, on the
/// stream's synchronization.

#include <cstdint>

#include "examples/train/adam_scalars.hpp"

namespace corockpt::example::cuda_kernels {

/// The dtypes the training kernels read and write.
enum class ElementType : int { float32 = 0, bfloat16 = 1 };

/// grad[i] = synthetic_gradient(name_hash, first_index + i, step), i < count.
int launch_synthetic_gradient(float* grad, std::uint32_t name_hash, std::int64_t first_index, std::int64_t count,
                              std::int64_t step, void* stream);

/// Adam's update of `count` elements of `type`: the host's `optimizer_step`, operation for
/// operation, reading `grad` (float32).
int launch_adam(void* value, void* exp_avg, void* exp_avg_sq, ElementType type, const float* grad, std::int64_t count,
                AdamStepScalars scalars, void* stream);

/// Threads per block of launch_busy: `scratch` holds blocks * busy_threads floats.
constexpr int busy_threads = 256;

/// Forward/backward's stand-in: `blocks` blocks of FMAs on registers, each running for
/// `nanoseconds` (the GPU's global timer) from its start, then writing to `scratch`.
int launch_busy(float* scratch, int blocks, std::int64_t nanoseconds, void* stream);

/// data[i] += value, i < count (the benchmark's optimizer pass).
int launch_add(float* data, std::int64_t count, float value, void* stream);

/// cudaGetErrorString of a code returned above.
const char* error_text(int code);

}  // namespace corockpt::example::cuda_kernels
