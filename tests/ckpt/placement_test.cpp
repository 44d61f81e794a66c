#include "corockpt/ckpt/placement.hpp"

#include <catch2/catch.hpp>

using namespace corockpt;

TEST_CASE("placement - printed as PyTorch prints it and parsed back") {
  CHECK(Placement::Shard(0).to_string() == "Shard(0)");
  CHECK(Placement::Shard(12).to_string() == "Shard(12)");
  CHECK(Placement::Replicate().to_string() == "Replicate()");
  CHECK(parse_placement("Shard(0)").value() == Placement::Shard(0));
  CHECK(parse_placement(" Shard(3) ").value() == Placement::Shard(3));
  CHECK(parse_placement("Replicate()").value() == Placement::Replicate());
  CHECK(parse_placement("Shard(1)").value().is_shard());
  CHECK(parse_placement("Replicate()").value().is_replicate());
}

TEST_CASE("placement - equality: shards by dim, replicates always") {
  CHECK(Placement::Shard(1) == Placement::Shard(1));
  CHECK_FALSE(Placement::Shard(0) == Placement::Shard(1));
  CHECK_FALSE(Placement::Shard(0) == Placement::Replicate());
  CHECK(Placement{Placement::replicate, 5} == Placement::Replicate());
}

TEST_CASE("placement - malformed text is an error quoting it") {
  for (const char* text : {"Shard(-1)", "Shard()", "Shard(x)", "Shard(1", "Partial()", "replicate", ""}) {
    auto p = parse_placement(text);
    REQUIRE_FALSE(p);
    CHECK(p.error().code == Errc::invalid_argument);
    CHECK(p.error().message.find("\"" + std::string(text) + "\"") != std::string::npos);
  }
}
