// Built instead of the mpi plugin when MPI is missing or COROCKPT_WITH_MPI is OFF: the
// functions exist, and say why they cannot work.
#include "corockpt/plugins/comm/mpi/mpi_communicator.hpp"

namespace corockpt {

Result<std::shared_ptr<Communicator>> make_mpi_world(Runtime&, CommOptions) {
  return fail(Errc::unavailable,
              "the mpi communicator is not built: configure with -DCOROCKPT_WITH_MPI=ON on a machine with OpenMPI "
              "(libopenmpi-dev)",
              {.operation = "make_mpi_world"});
}

Result<void> finalize_mpi(std::chrono::milliseconds) { return {}; }

}  // namespace corockpt
