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
