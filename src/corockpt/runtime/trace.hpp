#pragma once
/// @file
/// Tracing: spans (name, category, start, duration, thread, rank) recorded cheaply and
/// written as a Chrome trace-event JSON file that Perfetto and chrome://tracing open.
/// Disabled, a span costs one relaxed atomic load.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "corockpt/runtime/error.hpp"

namespace corockpt {

struct SpanRecord {
  std::string name;
  std::string category;  ///< "step", "gather", "copy", "write", ...
  std::int64_t start_ns;  ///< since the tracer was made
  std::int64_t duration_ns;
  std::uint32_t thread;  ///< a small number per OS thread
  int rank;              ///< -1 when the span belongs to no rank
};

class Tracer {
 public:
  Tracer();

  void enable(bool on = true) { enabled_.store(on, std::memory_order_relaxed); }
  bool enabled() const { return enabled_.load(std::memory_order_relaxed); }

  /// Nanoseconds since the tracer was made (the time base of every span).
  std::int64_t now_ns() const;
  /// Records a finished span; ignored when disabled. Thread-safe.
  void record(std::string name, std::string category, std::int64_t start_ns, std::int64_t duration_ns,
              int rank = -1);

  std::vector<SpanRecord> spans() const;
  void clear();

  /// Writes every span so far as Chrome trace-event JSON ("X" events, one process per
  /// rank, named "rank N"). @returns an Error naming the path if it cannot be written.
  Result<void> write_chrome_json(const std::string& path) const;

 private:
  std::chrono::steady_clock::time_point origin_;
  std::atomic<bool> enabled_{false};
  mutable std::mutex mutex_;
  std::vector<SpanRecord> spans_;
};

/// Records a span from construction to destruction (or `finish`).
class ScopedSpan {
 public:
  ScopedSpan(Tracer& tracer, std::string name, std::string category, int rank = -1);
  ~ScopedSpan() { finish(); }
  ScopedSpan(const ScopedSpan&) = delete;
  ScopedSpan& operator=(const ScopedSpan&) = delete;
  void finish();

 private:
  Tracer* tracer_;  // null when tracing was off at construction, or once finished
  std::string name_;
  std::string category_;
  int rank_;
  std::int64_t start_ns_ = 0;
};

}  // namespace corockpt
