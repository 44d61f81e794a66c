#include "corockpt/ckpt/detail/issue_order.hpp"

namespace corockpt::detail {

IssueOrder::IssueOrder(std::size_t units) : passed_(units, false) {
  for (std::size_t i = 0; i < units; ++i) turns_.push_back(std::make_unique<Latch>());
  if (units > 0) turns_[0]->set();
}

Task<void> IssueOrder::turn(std::size_t index) { return turns_.at(index)->async_wait(); }

void IssueOrder::pass(std::size_t index) {
  if (passed_.at(index)) return;
  passed_[index] = true;
  while (next_ < passed_.size() && passed_[next_]) ++next_;
  // Latch resumes its waiter through the waiter's executor: after this unit has issued.
  if (next_ < passed_.size()) turns_[next_]->set();
}

}  // namespace corockpt::detail
