#pragma once
/// @file
/// CUDA runtime errors as corockpt `Error`s (internal to the cuda and nccl plugins: it
/// includes cuda_runtime.h, so only their .cpp files include it).

#include <cuda_runtime.h>

#include <string_view>

#include "corockpt/runtime/error.hpp"

namespace corockpt::cuda_detail {

/// The Error for `code` returned by `call` ("cudaMemcpyAsync"): its message is
/// "<call>: <cudaGetErrorString>", its operation `call`.
Error cuda_error(cudaError_t code, std::string_view call);

/// Makes `device` current on the calling thread. @returns the Error of cudaSetDevice.
Result<void> use_device(int device);

}  // namespace corockpt::cuda_detail
