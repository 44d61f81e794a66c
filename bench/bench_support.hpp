#pragma once
// What the benchmarks share: the spread of a figure over the rounds of a run, random
// bytes to write, clocks, how a benchmark fails, the disk and memory a run may take,
// child processes, and fio as the benchmarks run it. Bodies are in bench_support.cpp
// (the corockpt_bench_support library), but for the templates, spread_of and
// fill_random (which a test uses too).
#include <sys/resource.h>  // RUSAGE_SELF, RUSAGE_CHILDREN for cpu_seconds

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "corockpt/runtime/error.hpp"

namespace corockpt::bench {

inline constexpr std::uint64_t gib = std::uint64_t{1} << 30;
inline constexpr std::uint64_t mib = std::uint64_t{1} << 20;

// ---------------------------------------------------------------- figures over rounds

/// Median, minimum and maximum of a figure over rounds.
struct Spread {
  double median = 0, min = 0, max = 0;
};

/// The spread of `values` (all zero when there are none).
inline Spread spread_of(std::vector<double> values) {
  if (values.empty()) return {};
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  const double median = n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
  return {median, values.front(), values.back()};
}

/// The spread of `value(round)` over `rounds`.
template <class Rounds, class F>
Spread spread_over(const Rounds& rounds, F value) {
  std::vector<double> values;
  for (const auto& round : rounds) values.push_back(value(round));
  return spread_of(std::move(values));
}

// ---------------------------------------------------------------- random bytes

/// Fills `bytes` (whole 8-byte words; a shorter tail is left as it is) with splitmix64's
/// stream from `seed`: incompressible, non-zero bytes, so no layer below can shortcut the
/// writes. Inline so that tests/plugins/storage/storage_test.cpp uses it without linking
/// this library, which is built only with the benchmarks.
inline void fill_random(std::span<std::byte> bytes, std::uint64_t seed) {
  std::uint64_t state = seed;
  for (std::size_t i = 0; i + sizeof(std::uint64_t) <= bytes.size(); i += sizeof(std::uint64_t)) {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    std::memcpy(bytes.data() + i, &z, sizeof z);
  }
}

// ---------------------------------------------------------------- clocks

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start);

/// User + system CPU seconds of `who`: RUSAGE_SELF (every thread of this process) or
/// RUSAGE_CHILDREN (the children waited for, and theirs).
double cpu_seconds(int who) noexcept;

// ---------------------------------------------------------------- failing

/// The program's name, which die() puts before its message.
void set_program_name(std::string name);

/// The run's scratch directory, which die() removes, so that a failure leaves no GiB
/// behind.
void remove_on_failure(std::string dir);

/// Makes a fresh `parent`/`prefix`-<pid> and names it to remove_on_failure().
std::string make_scratch_dir(const std::string& parent, const std::string& prefix);

/// Prints `what` (after the program's name) to stderr, removes the scratch directory
/// and exits 1 at once. Safe from any thread: no unwinding, no static destructors
/// racing the other threads.
[[noreturn]] void die(const std::string& what);

/// The value of `result`, or die() with `what` and its error.
template <class T>
T take(Result<T> result, const char* what) {
  if (!result) die(std::string(what) + ": " + result.error().to_string());
  if constexpr (!std::is_void_v<T>) return std::move(*result);
}

// ---------------------------------------------------------------- disk and memory

/// The filesystem holding a directory: the bytes we may still write to it, and its size.
struct DiskSpace {
  std::uint64_t available = 0;
  std::uint64_t size = 0;
};

Result<DiskSpace> disk_space(const std::string& dir);

/// The bytes a run may take: `requested`, or when `copies` of it do not fit in the free
/// space on `dir`, what does (saying so).
std::uint64_t fit_to_free_space(std::uint64_t requested, const std::string& dir, unsigned copies);

/// MemAvailable from /proc/meminfo, in bytes (0 when it cannot be read).
std::uint64_t memory_available();

// ---------------------------------------------------------------- child processes

/// Whether `program` is an executable in one of PATH's directories.
bool on_path(const std::string& program);

/// How a child process ended.
struct ChildRun {
  int status = -1;         ///< as waitpid reports it
  double cpu_seconds = 0;  ///< user + system of the child and the children it waited for
  bool ok() const;         ///< exited with 0
};

/// Runs `args` (args[0] looked up on PATH) and waits for it; `quiet` sends its output
/// to /dev/null. Fails only when it cannot be started or waited for.
Result<ChildRun> run_child(const std::vector<std::string>& args, bool quiet = false);

/// The whole of a file's text (empty when it cannot be read).
std::string read_text(const std::string& path);

// ---------------------------------------------------------------- fio

/// One fio job as the benchmarks run it: io_uring, O_DIRECT, `files` files fio.0,
/// fio.1, ... in `dir` walked round-robin, `depth` blocks of `block` bytes in flight. A
/// write reserves each file's space first (fallocate) and ends in an fsync of every file.
struct FioJob {
  std::string name;  ///< the job's name in fio's report
  std::string dir;
  bool write = true;  ///< else read the files a write job left
  std::uint64_t block = 0;
  unsigned depth = 0;
  std::size_t files = 0;
  std::uint64_t file_bytes = 0;  ///< whole blocks

  std::uint64_t total_bytes() const { return file_bytes * files; }
};

/// What fio took for a job: its own job runtime (see run_fio) and the CPU of its processes.
struct FioRun {
  double seconds = 0;
  double cpu_seconds = 0;
};

/// Where fio writes its report (--output-format=json) for a job in `dir`.
std::string fio_output_path(const std::string& dir);

/// Runs `job` through fio (which must be on PATH) and reads its report, removing it.
/// Fails when fio fails, or reports an error or moving other than total_bytes().
Result<FioRun> run_fio(const FioJob& job);

}  // namespace corockpt::bench
