// Built instead of the nccl communicator when CUDA or NCCL is missing or
// COROCKPT_WITH_CUDA is OFF: the functions exist, and say why they cannot work.
#include "corockpt/plugins/comm/nccl/nccl_communicator.hpp"

namespace corockpt {

namespace {

std::unexpected<Error> built_without_nccl(const char* operation) {
  return fail(Errc::unavailable,
              "corockpt was built without CUDA/NCCL: configure with -DCOROCKPT_WITH_CUDA=ON on a machine with the "
              "CUDA toolkit and NCCL (looked for under /usr/local/cuda)",
              {.operation = operation});
}

}  // namespace

Task<NcclUniqueId> nccl_unique_id_from(std::shared_ptr<Communicator>) {
  co_return built_without_nccl("nccl_unique_id_from");
}

Task<std::shared_ptr<Communicator>> make_nccl_world(Runtime&, std::shared_ptr<Communicator>, NcclOptions) {
  co_return built_without_nccl("make_nccl_world");
}

}  // namespace corockpt
