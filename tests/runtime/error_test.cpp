#include "corockpt/runtime/error.hpp"

#include <catch2/catch.hpp>
#include <cerrno>

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
