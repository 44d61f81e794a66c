# Every dependency is a Debian package (tools/install-deps.sh installs them);
# nothing is downloaded at build time.
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)

# Asio, standalone (libasio-dev): header-only.
find_path(ASIO_INCLUDE_DIR asio.hpp REQUIRED)
add_library(corockpt_asio INTERFACE)
target_include_directories(corockpt_asio SYSTEM INTERFACE ${ASIO_INCLUDE_DIR})
# Asio picks aligned_alloc/free or operator new/delete for its recycled memory by
# whether libstdc++'s config was included before Asio's, so two translation units can
# disagree (new in one, free in the other: AddressSanitizer reports it). One choice
# for all: operator new/delete.
target_compile_definitions(corockpt_asio INTERFACE ASIO_STANDALONE ASIO_NO_DEPRECATED
  ASIO_DISABLE_STD_ALIGNED_ALLOC)
target_link_libraries(corockpt_asio INTERFACE Threads::Threads)

pkg_check_modules(URING REQUIRED IMPORTED_TARGET liburing)
# ISA-L (libisal-dev): hardware-accelerated CRC-32C for checkpoint checksums.
pkg_check_modules(ISAL REQUIRED IMPORTED_TARGET libisal)
find_package(nlohmann_json 3 REQUIRED)
find_package(CLI11 REQUIRED)

# CUDA 13 and NCCL live under /usr/local/cuda; the plugins that need them are built
# when they are found, and the rest of corockpt builds without them.
set(COROCKPT_HAVE_CUDA OFF)
if(COROCKPT_WITH_CUDA)
  if(NOT CUDAToolkit_ROOT AND EXISTS /usr/local/cuda)
    set(CUDAToolkit_ROOT /usr/local/cuda)
  endif()
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND)
    set(COROCKPT_HAVE_CUDA ON)
  endif()
endif()
message(STATUS "corockpt: CUDA plugins ${COROCKPT_HAVE_CUDA}")

# The CUDA language, for the kernels of the examples and benchmarks (.cu files built by
# nvcc: stand-ins for a training loop's compute). check_language first, so a machine with
# the CUDA libraries but no working nvcc still builds everything else; `--device cuda`
# then says what is missing.
set(COROCKPT_HAVE_CUDA_KERNELS OFF)
if(COROCKPT_HAVE_CUDA)
  if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS "${CUDAToolkit_BIN_DIR}/nvcc")
    set(ENV{CUDACXX} "${CUDAToolkit_BIN_DIR}/nvcc")  # nvcc need not be on PATH
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # H100 / H200 unless the user chose (enable_language would pick nvcc's oldest).
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT DEFINED ENV{CUDAARCHS})
      set(CMAKE_CUDA_ARCHITECTURES 90)
    endif()
    # One CUDA runtime per process: the shared one the plugins link (CUDA::cudart).
    if(NOT DEFINED CMAKE_CUDA_RUNTIME_LIBRARY)
      set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
    endif()
    enable_language(CUDA)
    set(COROCKPT_HAVE_CUDA_KERNELS ON)
  endif()
endif()
message(STATUS "corockpt: CUDA kernels (nvcc) ${COROCKPT_HAVE_CUDA_KERNELS}")

# NCCL: the nccl communicator is built when CUDA is found and NCCL sits beside it (or in
# the system's paths). corockpt_nccl carries its header and library.
set(COROCKPT_HAVE_NCCL OFF)
if(COROCKPT_HAVE_CUDA)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ${CUDAToolkit_ROOT}/include)
  find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_ROOT}/lib64 ${CUDAToolkit_ROOT}/lib)
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    set(COROCKPT_HAVE_NCCL ON)
    add_library(corockpt_nccl INTERFACE)
    target_include_directories(corockpt_nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR})
    target_link_libraries(corockpt_nccl INTERFACE ${NCCL_LIBRARY} CUDA::cudart)
  endif()
endif()
message(STATUS "corockpt: NCCL communicator ${COROCKPT_HAVE_NCCL}")
