# `cmake --install BUILD --prefix P`: the static libraries, the public headers under
# P/include/corockpt/, and the CMake package (find_package(corockpt)) that exports the
# library targets, never the programs, under corockpt::.
include(CMakePackageConfigHelpers)

set(COROCKPT_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/corockpt)

install(TARGETS corockpt_runtime corockpt_plugins corockpt_ckpt corockpt_all
        EXPORT corockptTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

# Every header but the few that include a dependency's own header (mpi.h, cuda_runtime.h):
# they belong to a plugin's .cpp files, and no installed header includes them.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/src/corockpt/
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/corockpt
        FILES_MATCHING PATTERN "*.hpp"
        PATTERN "mpi_library.hpp" EXCLUDE
        PATTERN "mpi_progress.hpp" EXCLUDE
        PATTERN "host_staging.hpp" EXCLUDE
        PATTERN "nccl_state.hpp" EXCLUDE
        PATTERN "cuda_error.hpp" EXCLUDE)

install(EXPORT corockptTargets NAMESPACE corockpt:: DESTINATION ${COROCKPT_INSTALL_CMAKEDIR})

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/corockptConfig.cmake.in
  ${PROJECT_BINARY_DIR}/corockptConfig.cmake
  INSTALL_DESTINATION ${COROCKPT_INSTALL_CMAKEDIR})
# 0.x: a minor version may change the API, so only the same minor version is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/corockptConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/corockptConfig.cmake
              ${PROJECT_BINARY_DIR}/corockptConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/corockptDependencies.cmake
        DESTINATION ${COROCKPT_INSTALL_CMAKEDIR})
