# What the corockpt libraries link, found the same way by corockpt's own build and by the
# installed package (corockptConfig.cmake includes this file, installed beside it).
# Debian's Asio, liburing and ISA-L ship no CMake config, so the find logic travels with
# corockpt. The libraries are static: a program that links them links these too.
#
# Inputs (set by the caller): COROCKPT_DEPS_MPI, COROCKPT_DEPS_CUDA, COROCKPT_DEPS_NCCL,
# whether the libraries were built with the mpi communicator, the cuda device and the
# nccl communicator. A missing dependency stops with CMake's own message naming it.
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)

# Asio, standalone (libasio-dev): header-only. Its configuration macros are on
# corockpt::runtime's interface, not here (see src/corockpt/runtime/CMakeLists.txt).
if(NOT TARGET corockpt_deps::asio)
  find_path(COROCKPT_ASIO_INCLUDE_DIR asio.hpp REQUIRED)
  add_library(corockpt_deps::asio INTERFACE IMPORTED)
  target_include_directories(corockpt_deps::asio SYSTEM INTERFACE ${COROCKPT_ASIO_INCLUDE_DIR})
  target_link_libraries(corockpt_deps::asio INTERFACE Threads::Threads)
endif()

pkg_check_modules(URING REQUIRED IMPORTED_TARGET liburing)
# ISA-L (libisal-dev): hardware-accelerated CRC-32C for checkpoint checksums.
pkg_check_modules(ISAL REQUIRED IMPORTED_TARGET libisal)
find_package(nlohmann_json 3 REQUIRED)

if(COROCKPT_DEPS_MPI)
  # The C API, found through the CXX component (no C compiler needed); no C++ bindings.
  set(MPI_CXX_SKIP_MPICXX ON)
  find_package(MPI REQUIRED COMPONENTS CXX)
endif()

if(COROCKPT_DEPS_CUDA)
  if(NOT CUDAToolkit_ROOT AND EXISTS /usr/local/cuda)
    set(CUDAToolkit_ROOT /usr/local/cuda)
  endif()
  find_package(CUDAToolkit REQUIRED)
endif()

if(COROCKPT_DEPS_NCCL AND NOT TARGET corockpt_deps::nccl)
  find_path(COROCKPT_NCCL_INCLUDE_DIR nccl.h REQUIRED
            HINTS ${CUDAToolkit_INCLUDE_DIRS} ${CUDAToolkit_ROOT}/include)
  find_library(COROCKPT_NCCL_LIBRARY nccl REQUIRED
               HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_ROOT}/lib64 ${CUDAToolkit_ROOT}/lib)
  add_library(corockpt_deps::nccl INTERFACE IMPORTED)
  target_include_directories(corockpt_deps::nccl SYSTEM INTERFACE ${COROCKPT_NCCL_INCLUDE_DIR})
  target_link_libraries(corockpt_deps::nccl INTERFACE ${COROCKPT_NCCL_LIBRARY} CUDA::cudart)
endif()
