#include "corockpt/plugins/device/cuda/cuda_error.hpp"

#include <string>

namespace corockpt::cuda_detail {

namespace {

Errc code_for(cudaError_t code) {
  switch (code) {
    case cudaErrorInvalidValue:
    case cudaErrorInvalidDevicePointer:
    case cudaErrorInvalidMemcpyDirection:
    case cudaErrorInvalidDevice:
    case cudaErrorInvalidResourceHandle:
    case cudaErrorHostMemoryAlreadyRegistered:
    case cudaErrorHostMemoryNotRegistered:
      return Errc::invalid_argument;
    case cudaErrorMemoryAllocation:
      return Errc::no_space;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorDevicesUnavailable:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
    case cudaErrorNotSupported:
    case cudaErrorNotPermitted:
      return Errc::unavailable;
    default:
      return Errc::io;
  }
}

}  // namespace

Error cuda_error(cudaError_t code, std::string_view call) {
  std::string what(call);
  return Error{code_for(code), what + ": " + cudaGetErrorString(code), {.operation = what}, 0};
}

Result<void> use_device(int device) {
  if (cudaError_t code = cudaSetDevice(device); code != cudaSuccess) return fail(cuda_error(code, "cudaSetDevice"));
  return {};
}

}  // namespace corockpt::cuda_detail
