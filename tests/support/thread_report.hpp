#pragma once
// Catch2 v2's assertions are not thread-safe: code running on another thread (a rank's
// std::thread, a coroutine on the runtime's io thread, a callback from the library)
// records what went wrong here, and the test's own thread asserts after the join.
#include <exception>
#include <functional>
#include <latch>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace corockpt::test {

class ThreadReport {
 public:
  /// Records `what` when `ok` is false; returns `ok`. Thread-safe.
  bool expect(bool ok, const std::string& what) {
    if (!ok) {
      std::lock_guard lock(mutex_);
      failures_.push_back(what);
    }
    return ok;
  }
  bool expect(bool ok, const char* expression, const char* file, int line) {
    return ok || expect(false, std::string(file) + ":" + std::to_string(line) + ": " + expression);
  }
  /// Everything recorded so far, one per line (empty when nothing failed).
  std::string failures() const {
    std::lock_guard lock(mutex_);
    std::string text;
    for (const auto& f : failures_) text += f + "\n";
    return text;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> failures_;
};

/// Counts a latch down once: where the thread says so, or when it leaves early (a failed
/// THREAD_REQUIRE, an exception), so that no other thread waits for it forever.
class Arrival {
 public:
  explicit Arrival(std::latch& latch) : latch_(latch) {}
  ~Arrival() { arrive(); }
  Arrival(const Arrival&) = delete;
  Arrival& operator=(const Arrival&) = delete;
  void arrive() {
    if (!arrived_) latch_.count_down();
    arrived_ = true;
  }

 private:
  std::latch& latch_;
  bool arrived_ = false;
};

/// Runs `body(index)` on `n` threads and joins them; an exception a body throws is
/// recorded in `report` (with its index) rather than terminating the test program.
inline void on_threads(int n, ThreadReport& report, const std::function<void(int)>& body) {
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&report, &body, i] {
      try {
        body(i);
      } catch (const std::exception& e) {
        report.expect(false, "thread " + std::to_string(i) + " threw: " + e.what());
      }
    });
  }
  for (auto& t : threads) t.join();
}

}  // namespace corockpt::test

/// In a thread: records a false `expression` with its text and place, and goes on.
#define THREAD_CHECK(report, ...) (report).expect(static_cast<bool>(__VA_ARGS__), #__VA_ARGS__, __FILE__, __LINE__)
/// In a thread: records a false `expression` and returns from the enclosing function.
#define THREAD_REQUIRE(report, ...) \
  if (!THREAD_CHECK(report, __VA_ARGS__)) return
