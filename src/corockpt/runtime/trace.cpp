#include "corockpt/runtime/trace.hpp"

#include <cerrno>
#include <fstream>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

namespace corockpt {

namespace {

std::uint32_t this_thread_number() {
  static std::atomic<std::uint32_t> next{1};
  thread_local std::uint32_t number = next.fetch_add(1, std::memory_order_relaxed);
  return number;
}

// Chrome's trace viewer groups by process: rank r shows as process r + 1, the rest as 0.
int process_of(int rank) { return rank < 0 ? 0 : rank + 1; }

}  // namespace

Tracer::Tracer() : origin_(std::chrono::steady_clock::now()) {}

std::int64_t Tracer::now_ns() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - origin_).count();
}

void Tracer::record(std::string name, std::string category, std::int64_t start_ns, std::int64_t duration_ns,
                    int rank) {
  if (!enabled()) return;
  SpanRecord span{std::move(name), std::move(category), start_ns, duration_ns, this_thread_number(), rank};
  std::lock_guard lock(mutex_);
  spans_.push_back(std::move(span));
}

std::vector<SpanRecord> Tracer::spans() const {
  std::lock_guard lock(mutex_);
  return spans_;
}

void Tracer::clear() {
  std::lock_guard lock(mutex_);
  spans_.clear();
}

Result<void> Tracer::write_chrome_json(const std::string& path) const {
  auto spans = this->spans();
  nlohmann::json events = nlohmann::json::array();
  std::set<int> ranks;
  for (const auto& s : spans) {
    ranks.insert(s.rank);
    events.push_back({{"name", s.name},
                      {"cat", s.category},
                      {"ph", "X"},
                      {"ts", static_cast<double>(s.start_ns) / 1000.0},
                      {"dur", static_cast<double>(s.duration_ns) / 1000.0},
                      {"pid", process_of(s.rank)},
                      {"tid", s.thread}});
  }
  for (int rank : ranks) {
    events.push_back({{"name", "process_name"},
                      {"ph", "M"},
                      {"pid", process_of(rank)},
                      {"args", {{"name", rank < 0 ? std::string("corockpt") : "rank " + std::to_string(rank)}}}});
  }
  nlohmann::json doc = {{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}};

  std::ofstream out(path, std::ios::trunc);
  if (!out) return fail(system_error(errno, "write_chrome_json", path));
  out << doc.dump() << '\n';
  out.close();
  if (!out) return fail(system_error(errno ? errno : EIO, "write_chrome_json", path));
  return {};
}

ScopedSpan::ScopedSpan(Tracer& tracer, std::string name, std::string category, int rank)
    : tracer_(tracer.enabled() ? &tracer : nullptr), rank_(rank) {
  if (!tracer_) return;
  name_ = std::move(name);
  category_ = std::move(category);
  start_ns_ = tracer_->now_ns();
}

void ScopedSpan::finish() {
  if (!tracer_) return;
  Tracer* t = std::exchange(tracer_, nullptr);
  t->record(std::move(name_), std::move(category_), start_ns_, t->now_ns() - start_ns_, rank_);
}

}  // namespace corockpt
