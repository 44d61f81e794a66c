// The bounds a command checks before allocating a model: ranks in one process, memory.
#include "corockpt/ckpt/resource_bounds.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/ckpt/seed_spec.hpp"
#include "tests/support/local_ranks.hpp"

using namespace corockpt;

namespace {

ModelSpec spec_of(const std::string& json) {
  auto spec = parse_model_spec(json);
  if (!spec) throw std::runtime_error(spec.error().to_string());
  return *spec;
}

// Builds the spec's model on each rank and runs the memory check; the model is never
// allocated. @returns "" when it passes, else the error.
Task<std::string> check_rank(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> world) {
  auto model = co_await Model::build(spec, rank, std::move(world));
  if (!model) co_return fail(model.error());
  auto fits = co_await check_memory_before_allocating(**model);
  std::string outcome;
  if (!fits) outcome = fits.error().to_string();
  co_return outcome;
}

std::vector<Result<std::string>> check_on(const ModelSpec& spec) {
  Runtime rt;
  return test::run_local_ranks<std::string>(rt, spec.world_size, [&](int r, std::shared_ptr<Communicator> w) {
    return check_rank(spec, r, std::move(w));
  });
}

}  // namespace

TEST_CASE("resource bounds - at most 1024 ranks run in one process, and the error says how to run more") {
  CHECK(check_ranks_in_process(1));
  CHECK(check_ranks_in_process(max_ranks_in_process));
  auto refused = check_ranks_in_process(100000);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == Errc::invalid_argument);
  CHECK_THAT(refused.error().message, Catch::Contains("100000 ranks in one process: at most 1024"));
  CHECK_THAT(refused.error().message, Catch::Contains("mpirun"));
}

TEST_CASE("resource bounds - a model larger than the memory there is fails on every rank before allocating") {
  // The seed's root weight made 1e6 x 1e6: 10.9 TiB with Adam's two states, over 4 ranks.
  auto json = nlohmann::json::parse(test::seed_spec_json("per_param", 4, 2));
  json["params"][0]["shape"] = {1000000, 1000000};
  const ModelSpec huge = spec_of(json.dump());
  const auto outcomes = check_on(huge);
  for (const auto& outcome : outcomes) {
    REQUIRE(outcome.has_value());  // the check ran (no collective failed)
    CHECK_THAT(*outcome, Catch::StartsWith("no_memory: the model needs 10.91 TiB of host memory in this process"));
    CHECK_THAT(*outcome, Catch::Contains("(4 ranks: 0, 1, 2, 3)"));
    CHECK_THAT(*outcome, Catch::Contains("largest tensor is \"net.0.weight\""));
  }
}

TEST_CASE("resource bounds - a model that fits passes on every rank") {
  for (const auto& outcome : check_on(spec_of(test::seed_spec_json("flat", 8, 4)))) {
    REQUIRE(outcome.has_value());
    CHECK(*outcome == "");
  }
}

TEST_CASE("resource bounds - processes of one machine add their needs up against its MemAvailable") {
  using detail::RankMemory;
  constexpr std::uint64_t gib = 1ull << 30;
  const ProcessId a{.host = 1, .pid = 10}, b{.host = 1, .pid = 11}, c{.host = 2, .pid = 10};
  // Two processes of host 1 need 6 GiB each: each fits its own 10 GiB, not the host's 10 together.
  const std::vector<RankMemory> crowded = {{a, 6 * gib, 10 * gib, 10 * gib}, {b, 6 * gib, 10 * gib, 10 * gib},
                                           {c, 6 * gib, 10 * gib, 10 * gib}};
  auto seen_from_a = detail::memory_shortfall(crowded, a);
  REQUIRE(seen_from_a);
  CHECK(*seen_from_a ==
        "the model needs 12.00 GiB of host memory in this machine (2 ranks: 0, 1) but it may take only 10.00 GiB "
        "more (MemAvailable, shared by its processes)");
  auto seen_from_c = detail::memory_shortfall(crowded, c);
  REQUIRE(seen_from_c);
  CHECK_THAT(*seen_from_c, Catch::Contains("in the machine of rank 0 (2 ranks: 0, 1)"));
  // One process over its own limit (a cgroup, RLIMIT_AS) is named before any machine.
  const std::vector<RankMemory> limited = {{a, 1 * gib, 10 * gib, 10 * gib}, {c, 3 * gib, 2 * gib, 10 * gib}};
  auto process = detail::memory_shortfall(limited, a);
  REQUIRE(process);
  CHECK_THAT(*process, Catch::StartsWith("the model needs 3.00 GiB of host memory in the process of rank 1 (1 rank: 1)"));
  // Ranks of one process (the local backend) add up too; spread over hosts they fit.
  CHECK(detail::memory_shortfall(std::vector<RankMemory>{{a, 6 * gib, 10 * gib, 10 * gib}, {c, 6 * gib, 10 * gib, 10 * gib}}, a) ==
        std::nullopt);
  CHECK(detail::memory_shortfall(std::vector<RankMemory>{{a, 6 * gib, 10 * gib, 10 * gib}, {a, 6 * gib, 10 * gib, 10 * gib}}, a)
            ->starts_with("the model needs 12.00 GiB of host memory in this process (2 ranks: 0, 1)"));
}
