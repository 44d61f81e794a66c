#pragma once
// A bound on a test that would otherwise hang: if it is still alive after `limit`, the
// watchdog says which operation hung and ends the test program (a thread blocked in a
// syscall can be neither cancelled nor joined), so a regression fails in seconds with a
// reason instead of at CTest's timeout. It asserts nothing itself (Catch2 is not
// thread-safe): it only prints and exits.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

namespace corockpt::test {

class HangWatchdog {
 public:
  HangWatchdog(std::string what, std::chrono::seconds limit)
      : thread_([this, what = std::move(what), limit] {
          std::unique_lock lock(mutex_);
          if (changed_.wait_for(lock, limit, [this] { return dismissed_; })) return;
          std::fprintf(stderr, "HANG: %s did not finish within %lld s; ending the test program\n", what.c_str(),
                       static_cast<long long>(limit.count()));
          std::fflush(stderr);
          std::_Exit(1);
        }) {}
  ~HangWatchdog() {
    {
      std::lock_guard lock(mutex_);
      dismissed_ = true;
    }
    changed_.notify_all();
    thread_.join();
  }
  HangWatchdog(const HangWatchdog&) = delete;
  HangWatchdog& operator=(const HangWatchdog&) = delete;

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool dismissed_ = false;
  std::thread thread_;  // last: starts once the members it uses exist
};

}  // namespace corockpt::test
