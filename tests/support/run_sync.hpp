#pragma once
// Test helpers: run a task to its end from the test's own (synchronous) thread.
#include "corockpt/runtime/runtime.hpp"

namespace corockpt::test {

template <class T>
Result<T> run_sync(Runtime& rt, Task<T> task) {
  return rt.spawn(std::move(task)).get();
}

}  // namespace corockpt::test
