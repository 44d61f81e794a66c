#include "bench/bench_support.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <spawn.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <system_error>

namespace corockpt::bench {

// ---------------------------------------------------------------- clocks

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// RUSAGE_SELF sums every thread of the process, and io_uring's io-wq workers are
// threads of it (the kernel creates them with CLONE_THREAD; `ps -L` lists the
// iou-wrk-<pid> threads under our pid), so the writes the kernel punts to io-wq count
// against uring. On ext4 those are most of them: an appending O_DIRECT write allocates
// blocks and cannot be issued without blocking (8 workers here, one per file). What no
// process is charged for (interrupts, ext4's kworkers) is missed for every engine alike.
double cpu_seconds(int who) noexcept {
  rusage usage{};
  ::getrusage(who, &usage);
  auto seconds = [](timeval t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// ---------------------------------------------------------------- failing

namespace {
// Set by the main thread before any other starts; only read after that.
std::string program_name = "corockpt_bench";
std::string scratch_dir;
}  // namespace

void set_program_name(std::string name) { program_name = std::move(name); }

void remove_on_failure(std::string dir) { scratch_dir = std::move(dir); }

std::string make_scratch_dir(const std::string& parent, const std::string& prefix) {
  const std::string dir = parent + "/" + prefix + "-" + std::to_string(::getpid());
  if (::mkdir(dir.c_str(), 0755) != 0) die("mkdir " + dir + ": " + std::strerror(errno));
  remove_on_failure(dir);
  return dir;
}

void die(const std::string& what) {
  std::fflush(stdout);  // what the run printed so far, before the reason it stops
  std::fprintf(stderr, "%s: %s\n", program_name.c_str(), what.c_str());
  if (!scratch_dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(scratch_dir, ec);
  }
  std::_Exit(1);
}

// ---------------------------------------------------------------- disk and memory

Result<DiskSpace> disk_space(const std::string& dir) {
  struct statvfs vfs {};
  if (::statvfs(dir.c_str(), &vfs) != 0) return fail(system_error(errno, "statvfs", dir));
  return DiskSpace{std::uint64_t{vfs.f_bavail} * vfs.f_frsize, std::uint64_t{vfs.f_blocks} * vfs.f_frsize};
}

std::uint64_t fit_to_free_space(std::uint64_t requested, const std::string& dir, unsigned copies) {
  const std::uint64_t free = take(disk_space(dir), "the free space").available;
  if (free >= copies * requested) return requested;
  const std::uint64_t size = free / copies;
  std::printf("free space: %.2f GiB free on %s, less than %ux %.2f GiB: scaling down to %.2f GiB\n",
              static_cast<double>(free) / gib, dir.c_str(), copies, static_cast<double>(requested) / gib,
              static_cast<double>(size) / gib);
  return size;
}

std::uint64_t memory_available() {
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  std::uint64_t kib = 0;
  while (in >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

// ---------------------------------------------------------------- child processes

bool on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (!dir.empty() && ::access((dir + "/" + program).c_str(), X_OK) == 0) return true;
  }
  return false;
}

bool ChildRun::ok() const { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

Result<ChildRun> run_child(const std::vector<std::string>& args, bool quiet) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  if (quiet) {
    ::posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    ::posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  }
  const double cpu_start = cpu_seconds(RUSAGE_CHILDREN);
  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  ::posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return fail(system_error(rc, "posix_spawnp", args[0]));
  ChildRun run;
  while (::waitpid(pid, &run.status, 0) < 0) {
    if (errno != EINTR) return fail(system_error(errno, "waitpid", args[0]));
  }
  // A child waits for its own children (fio for its job processes), so their CPU
  // reaches us through it.
  run.cpu_seconds = cpu_seconds(RUSAGE_CHILDREN) - cpu_start;
  return run;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// ---------------------------------------------------------------- fio

std::string fio_output_path(const std::string& dir) { return dir + "/fio-output.json"; }

namespace {

std::vector<std::string> fio_arguments(const FioJob& job) {
  auto arg = [](std::string name, auto value) { return "--" + name + "=" + std::to_string(value); };
  std::vector<std::string> args = {
      "fio", "--name=" + job.name, "--ioengine=io_uring", "--direct=1", job.write ? "--rw=write" : "--rw=read",
      arg("bs", job.block), arg("iodepth", job.depth), arg("nrfiles", job.files),
      arg("filesize", job.file_bytes), arg("size", job.total_bytes()),
      "--file_service_type=roundrobin", "--filename_format=fio.$filenum", "--directory=" + job.dir,
      "--output-format=json", "--output=" + fio_output_path(job.dir), "--eta=never"};
  if (job.write) {
    args.push_back("--end_fsync=1");
    // Like ours: each file's space reserved before it is written (fio lays it out
    // before its clock starts; ours is timed).
    args.push_back("--fallocate=native");
  }
  // No --fixedbufs, although our uring runs use registered buffers: fio 3.33 with
  // fixedbufs fails its end_fsync SQEs with EINVAL (seen in the io_uring_complete
  // tracepoint) and reports success, so its data would not be durable and its time short.
  return args;
}

/// jobs[0]'s runtime in seconds for the job's direction, checking that it moved
/// total_bytes() without an error.
Result<double> fio_runtime(const std::string& report_path, const FioJob& job) {
  const auto json = nlohmann::json::parse(read_text(report_path), nullptr, /*allow_exceptions=*/false);
  using Pointer = nlohmann::json::json_pointer;
  auto number = [&](const std::string& pointer) -> std::optional<double> {
    if (json.is_discarded() || !json.contains(Pointer(pointer))) return std::nullopt;
    const auto& value = json.at(Pointer(pointer));
    if (!value.is_number()) return std::nullopt;
    return value.get<double>();
  };
  const std::string direction = job.write ? "write" : "read";
  const auto runtime_ms = number("/jobs/0/" + direction + "/runtime");
  const auto io_bytes = number("/jobs/0/" + direction + "/io_bytes");
  const auto error = number("/jobs/0/error");
  if (!runtime_ms || !io_bytes || !error || *runtime_ms <= 0) {
    return fail(Errc::corrupt, "fio's JSON output lacks jobs[0]." + direction + ".runtime/io_bytes",
                {.path = report_path});
  }
  if (*error != 0 || *io_bytes != static_cast<double>(job.total_bytes())) {
    return fail(Errc::io, "fio reported error " + std::to_string(static_cast<long>(*error)) + " after " +
                              std::to_string(static_cast<std::uint64_t>(*io_bytes)) + " of " +
                              std::to_string(job.total_bytes()) + " bytes", {.path = report_path});
  }
  return *runtime_ms / 1000.0;
}

}  // namespace

// Timing choice: fio's own job runtime (jobs[0].write.runtime), not the wall time of the
// fio process. fio starts that clock after it has created the files and set up its ring
// and buffers, and stops it after end_fsync's fsyncs complete (strace: the job's opens
// to its exit span the runtime). The process wall time adds exec, option parsing, those
// setups, forking the job and writing the JSON: about 0.35 s here, which would make fio
// look slower than it writes. Our clocks include creating the files, so the runtime is
// the stricter choice for us. Its resolution is 1 ms (0.4% of a 0.25 GiB run at 1 GB/s).
// Its CPU (RUSAGE_CHILDREN) does include fio's fixed start-up, about 0.2 s a run here:
// in the CPU comparison that favours us, by 0.05 s/GiB at 4 GiB.
Result<FioRun> run_fio(const FioJob& job) {
  auto run = run_child(fio_arguments(job));
  if (!run) return fail(run.error());
  if (!run->ok()) {
    return fail(Errc::io, "fio failed (status " + std::to_string(run->status) + "); its messages are above");
  }
  auto seconds = fio_runtime(fio_output_path(job.dir), job);
  ::unlink(fio_output_path(job.dir).c_str());
  if (!seconds) return fail(seconds.error());
  return FioRun{*seconds, run->cpu_seconds};
}

}  // namespace corockpt::bench
