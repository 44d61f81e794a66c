# Every dependency is a Debian package (tools/install-deps.sh installs them); nothing is
# downloaded at build time. This file decides which optional engines the libraries get
# (MPI, CUDA, NCCL: each built when found, unless switched off); corockptDependencies.cmake
# then finds what the libraries link, as the installed package does.

set(COROCKPT_HAVE_MPI OFF)
if(COROCKPT_WITH_MPI)
  set(MPI_CXX_SKIP_MPICXX ON)
  find_package(MPI COMPONENTS CXX)
  if(MPI_CXX_FOUND)
    set(COROCKPT_HAVE_MPI ON)
  endif()
endif()
message(STATUS "corockpt: MPI communicator ${COROCKPT_HAVE_MPI}")

# CUDA 13 and NCCL live under /usr/local/cuda; the plugins that need them are built
# when they are found, and the rest of corockpt builds without them.
set(COROCKPT_HAVE_CUDA OFF)
set(COROCKPT_HAVE_NCCL OFF)
if(COROCKPT_WITH_CUDA)
  if(NOT CUDAToolkit_ROOT AND EXISTS /usr/local/cuda)
    set(CUDAToolkit_ROOT /usr/local/cuda)
  endif()
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND)
    set(COROCKPT_HAVE_CUDA ON)
    find_path(COROCKPT_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ${CUDAToolkit_ROOT}/include)
    find_library(COROCKPT_NCCL_LIBRARY nccl
                 HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_ROOT}/lib64 ${CUDAToolkit_ROOT}/lib)
    if(COROCKPT_WITH_NCCL AND COROCKPT_NCCL_INCLUDE_DIR AND COROCKPT_NCCL_LIBRARY)
      set(COROCKPT_HAVE_NCCL ON)
    endif()
  endif()
endif()
message(STATUS "corockpt: CUDA plugins ${COROCKPT_HAVE_CUDA}")
message(STATUS "corockpt: NCCL communicator ${COROCKPT_HAVE_NCCL}")

set(COROCKPT_DEPS_MPI ${COROCKPT_HAVE_MPI})
set(COROCKPT_DEPS_CUDA ${COROCKPT_HAVE_CUDA})
set(COROCKPT_DEPS_NCCL ${COROCKPT_HAVE_NCCL})
include(${CMAKE_CURRENT_LIST_DIR}/corockptDependencies.cmake)

# Only the programs beside the libraries (the tool, the examples, the benchmarks) parse
# command lines.
if(COROCKPT_BUILD_TOOLS OR COROCKPT_BUILD_EXAMPLES OR COROCKPT_BUILD_BENCH)
  find_package(CLI11 REQUIRED)
endif()

# The CUDA language, for the kernels of the examples and benchmarks (.cu files built by
# nvcc: stand-ins for a training loop's compute; the libraries have none). check_language
# first, so a machine with the CUDA libraries but no working nvcc still builds everything
# else; `--device cuda` then says what is missing.
set(COROCKPT_HAVE_CUDA_KERNELS OFF)
if(COROCKPT_HAVE_CUDA AND COROCKPT_CUDA_KERNELS AND (COROCKPT_BUILD_EXAMPLES OR COROCKPT_BUILD_BENCH))
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
