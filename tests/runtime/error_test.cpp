#include "corockpt/runtime/error.hpp"

#include <catch2/catch.hpp>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <string>
#include <new>
#include <stdexcept>
#include <vector>

#include "corockpt/runtime/memory_limits.hpp"
#include "corockpt/runtime/runtime.hpp"

using namespace corockpt;

TEST_CASE("error - errno maps to the nearest code and keeps the system's own") {
  Error e = system_error(ENOSPC, "write_at", "/dev/full");
  CHECK(e.code == Errc::no_space);
  CHECK(e.sys_errno == ENOSPC);
  CHECK(system_error(EIO, "fsync").code == Errc::io);
  CHECK(system_error(EACCES, "open").code == Errc::permission_denied);
  CHECK(system_error(ENOENT, "open").code == Errc::not_found);
}

TEST_CASE("error - to_string names the code, the operation, the path and the rank") {
  Error e = system_error(ENOSPC, "write_at", "/dev/full");
  e.with_rank(3).with_fqn("net.0.weight");
  std::string s = e.to_string();
  CHECK(s.starts_with("no_space: "));
  CHECK(s.find("op=write_at") != std::string::npos);
  CHECK(s.find("path=/dev/full") != std::string::npos);
  CHECK(s.find("rank=3") != std::string::npos);
  CHECK(s.find("fqn=net.0.weight") != std::string::npos);
}

TEST_CASE("error - a failed allocation is no_memory, never internal") {
  CHECK(error_from_exception(std::make_exception_ptr(std::bad_alloc())).code == Errc::no_memory);
  CHECK(error_from_exception(std::make_exception_ptr(std::length_error("vector::_M_default_append"))).code ==
        Errc::no_memory);
  CHECK(error_from_exception(std::make_exception_ptr(std::runtime_error("a bug"))).code == Errc::internal);
  // Through a task, as a model's allocation inside a command's coroutine would fail.
  Runtime rt;
  auto failed = rt.spawn([]() -> Task<void> {
                  std::vector<std::byte> huge;
                  huge.reserve(huge.max_size() + 1);  // throws before allocating (ASan would abort a real attempt)
                  co_return Result<void>{};
                }())
                    .get();
  REQUIRE_FALSE(failed);
  CHECK(failed.error().code == Errc::no_memory);
}

TEST_CASE("memory headroom - names the limit it found, below what the machine has") {
  const MemoryHeadroom headroom = memory_headroom();
  CHECK(headroom.bytes > 0);
  CHECK_FALSE(headroom.source.empty());
  // Lowering the address-space limit lowers the headroom to it (in a child: the limit
  // is the process's).
  const pid_t child = ::fork();
  if (child == 0) {
    // 64 MiB above the address space in use (ASan reserves terabytes: never below it).
    std::ifstream status_file("/proc/self/status");
    std::string line;
    std::uint64_t vm_kib = 0;
    while (std::getline(status_file, line)) {
      if (line.rfind("VmSize:", 0) == 0) vm_kib = std::stoull(line.substr(7));
    }
    const rlim_t cap = vm_kib * 1024 + (rlim_t{64} << 20);
    rlimit tight{cap, cap};
    if (vm_kib == 0 || ::setrlimit(RLIMIT_AS, &tight) != 0) ::_exit(2);
    const MemoryHeadroom limited = memory_headroom();
    ::_exit(limited.bytes <= (std::uint64_t{64} << 20) && limited.source.find("RLIMIT_AS") != std::string::npos ? 0 : 1);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
}
