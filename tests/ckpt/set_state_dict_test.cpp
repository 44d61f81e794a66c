#include "corockpt/ckpt/set_state_dict.hpp"

#include <catch2/catch.hpp>
#include <cstring>

#include "corockpt/ckpt/collector.hpp"
#include "corockpt/plugins/comm/local/local_communicator.hpp"
#include "corockpt/runtime/runtime.hpp"
#include "fixtures/known_values.hpp"
#include "tests/ckpt/seed_spec.hpp"

using namespace corockpt;

namespace {

// Every view of the model's memory: values and optimizer states, flat slices included.
std::vector<TensorView> memory_of(Model& model) {
  std::vector<TensorView> out;
  for (auto& inst : model.instances()) {
    if (inst.is_flat()) {
      out.push_back(inst.flat_value);
      for (auto& s : inst.flat_states) out.push_back(s);
    }
    for (auto& slot : inst.params) {
      if (inst.is_flat() && !slot.spec->buffer) continue;
      out.push_back(slot.value);
      for (auto& s : slot.states) out.push_back(s);
    }
  }
  return out;
}

bool same_memory(Model& a, Model& b) {
  auto x = memory_of(a), y = memory_of(b);
  if (x.size() != y.size()) return false;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (x[i].nbytes() != y[i].nbytes() || std::memcmp(x[i].data, y[i].data, x[i].nbytes()) != 0) return false;
  }
  return a.step() == b.step();
}

struct Outcome {
  bool identical = false;
  SetReport report;
};

// On one rank: model A (known values, Adam state from weight decay) gives its state dict
// with `get`; model B, scrambled, takes it with `set`; the result compares them.
Task<Outcome> round_trip(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> world, StateDictOptions get,
                         StateDictOptions set, std::string drop) {
  auto a = co_await Model::build(spec, rank, world);
  if (!a) co_return fail(a.error());
  (*a)->allocate();
  fixtures::fill_known_values(**a);
  auto b = co_await Model::build(spec, rank, world);
  if (!b) co_return fail(b.error());
  (*b)->allocate();
  fixtures::fill_known_values(**b);
  auto state = co_await get_state_dict(**a, get);
  if (!state) co_return fail(state.error());
  for (auto& v : memory_of(**b)) std::memset(v.data, 0x5a, v.nbytes());
  if (!drop.empty()) state->model.erase(drop);
  auto report = co_await set_state_dict(**b, *state, set);
  if (!report) co_return fail(report.error());
  co_return Outcome{same_memory(**a, **b), std::move(*report)};
}

std::vector<Result<Outcome>> run_everywhere(const ModelSpec& spec, StateDictOptions get, StateDictOptions set,
                                            std::string drop = {}) {
  Runtime rt;
  auto world = make_local_world(rt, spec.world_size).value();
  std::vector<TaskHandle<Outcome>> handles;
  for (int r = 0; r < spec.world_size; ++r) {
    handles.push_back(rt.spawn(rt.make_strand(), round_trip(spec, r, world[r], get, set, drop)));
  }
  std::vector<Result<Outcome>> out;
  for (auto& h : handles) out.push_back(h.get());
  return out;
}

ModelSpec seed_with_weight_decay(const std::string& layout) {
  auto spec = parse_model_spec(test::seed_spec_json(layout)).value();
  spec.optimizer->weight_decay = 0.25;  // non-zero Adam states to restore
  return spec;
}

}  // namespace

TEST_CASE("set_state_dict - a sharded round trip leaves params and optimizer states bit-identical",
          "[set_state_dict]") {
  auto layout = GENERATE(std::string("flat"), std::string("per_param"));
  CAPTURE(layout);
  for (auto& r : run_everywhere(seed_with_weight_decay(layout), {}, {})) {
    INFO((r ? std::string() : r.error().to_string()));
    REQUIRE(r);
    CHECK(r->identical);
  }
}

TEST_CASE("set_state_dict - full on rank 0 (experts_to_rank0) with broadcast_from_rank0 restores every rank",
          "[set_state_dict]") {
  auto layout = GENERATE(std::string("flat"), std::string("per_param"));
  CAPTURE(layout);
  StateDictOptions get{.full_state_dict = true, .cpu_offload = true, .experts_to_rank0 = true};
  StateDictOptions set{.full_state_dict = true, .broadcast_from_rank0 = true};
  for (auto& r : run_everywhere(seed_with_weight_decay(layout), get, set)) {
    INFO((r ? std::string() : r.error().to_string()));
    REQUIRE(r);
    CHECK(r->identical);
  }
}

TEST_CASE("set_state_dict - full values held by every rank restore every rank", "[set_state_dict]") {
  auto layout = GENERATE(std::string("flat"), std::string("per_param"));
  StateDictOptions full{.full_state_dict = true};
  for (auto& r : run_everywhere(seed_with_weight_decay(layout), full, full)) {
    REQUIRE(r);
    CHECK(r->identical);
  }
}

TEST_CASE("set_state_dict - a missing key is an error naming it with strict, a report without", "[set_state_dict]") {
  auto spec = seed_with_weight_decay("per_param");
  for (auto& r : run_everywhere(spec, {}, {}, "second.net.0.bias")) {
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::not_found);
    CHECK(r.error().message.find("second.net.0.bias") != std::string::npos);
  }
  for (auto& r : run_everywhere(spec, {}, {.strict = false}, "second.net.0.bias")) {
    REQUIRE(r);
    CHECK(r->report.missing == std::vector<std::string>{"second.net.0.bias"});
    CHECK_FALSE(r->identical);  // that one param was not restored
  }
}
