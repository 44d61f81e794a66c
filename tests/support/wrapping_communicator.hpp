#pragma once
// The base of the test doubles that wrap a communicator: who they are (rank, size,
// backend, memory space, name) is the wrapped one's; each double overrides the operations.
#include <memory>
#include <string>
#include <string_view>

#include "corockpt/plugins/comm/communicator.hpp"

namespace corockpt::test {

class WrappingCommunicator : public Communicator {
 public:
  explicit WrappingCommunicator(std::shared_ptr<Communicator> inner) : inner_(std::move(inner)) {}

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string_view backend() const override { return inner_->backend(); }
  MemorySpace memory_space() const override { return inner_->memory_space(); }
  const std::string& name() const override { return inner_->name(); }

 protected:
  std::shared_ptr<Communicator> inner_;
};

}  // namespace corockpt::test
