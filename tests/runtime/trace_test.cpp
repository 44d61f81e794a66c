#include "corockpt/runtime/trace.hpp"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

using namespace corockpt;

TEST_CASE("trace - spans are written as valid Chrome trace-event JSON") {
  Tracer tracer;
  tracer.enable();
  {
    ScopedSpan step(tracer, "step 1", "step", 0);
    ScopedSpan write(tracer, "write shard", "write", 3);
  }
  std::thread([&] { ScopedSpan gather(tracer, "all_gather", "gather"); }).join();

  auto path = (std::filesystem::temp_directory_path() / "corockpt_trace_test.json").string();
  REQUIRE(tracer.write_chrome_json(path));
  std::ifstream in(path);
  auto doc = nlohmann::json::parse(in);  // throws (fails the test) if not valid JSON
  std::filesystem::remove(path);

  std::map<std::string, nlohmann::json> by_name;
  for (auto& e : doc.at("traceEvents")) {
    if (e.at("ph") == "X") by_name[e.at("name").get<std::string>()] = e;
  }
  REQUIRE(by_name.size() == 3);
  CHECK(by_name["step 1"]["cat"] == "step");
  CHECK(by_name["write shard"]["pid"] == 4);  // rank 3
  CHECK(by_name["all_gather"]["pid"] == 0);   // no rank
  CHECK(by_name["all_gather"]["tid"] != by_name["step 1"]["tid"]);
  CHECK(by_name["step 1"]["dur"].get<double>() >= 0.0);
  CHECK(by_name["step 1"]["ts"].get<double>() <= by_name["write shard"]["ts"].get<double>());
}

TEST_CASE("trace - nothing is recorded while disabled") {
  Tracer tracer;
  { ScopedSpan s(tracer, "ignored", "step"); }
  CHECK(tracer.spans().empty());
}

TEST_CASE("trace - an unwritable path is an error naming it") {
  Tracer tracer;
  auto r = tracer.write_chrome_json("/nonexistent-dir/trace.json");
  REQUIRE_FALSE(r);
  CHECK(r.error().context.path == "/nonexistent-dir/trace.json");
}
