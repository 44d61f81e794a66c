#include "corockpt/ckpt/collector.hpp"

#include <catch2/catch.hpp>
#include <filesystem>
#include <map>
#include <set>

#include "corockpt/plugins/comm/local/local_communicator.hpp"
#include "corockpt/runtime/runtime.hpp"
#include "fixtures/known_values.hpp"
#include "tests/ckpt/seed_spec.hpp"
#include "tests/support/delayed_communicator.hpp"

using namespace corockpt;

namespace {

struct RankState {
  std::unique_ptr<Model> model;
  StateDict state;
};

// Builds the spec's model on every rank of an in-process world, allocates and fills it,
// and runs get_state_dict everywhere.
std::vector<RankState> collect(Runtime& rt, const ModelSpec& spec, StateDictOptions options = {}) {
  auto world = make_local_world(rt, spec.world_size).value();
  std::vector<TaskHandle<RankState>> handles;
  for (int r = 0; r < spec.world_size; ++r) {
    handles.push_back(rt.spawn(rt.make_strand(), [](const ModelSpec& s, int rank, std::shared_ptr<Communicator> w,
                                                    StateDictOptions o) -> Task<RankState> {
      auto model = co_await Model::build(s, rank, std::move(w));
      if (!model) co_return fail(model.error());
      (*model)->allocate();
      fixtures::fill_known_values(**model);
      auto state = co_await get_state_dict(**model, o);
      if (!state) co_return fail(state.error());
      co_return RankState{std::move(*model), std::move(*state)};
    }(spec, r, world[r], options)));
  }
  std::vector<RankState> out;
  for (auto& h : handles) {
    auto r = h.get();
    INFO((r ? std::string() : r.error().to_string()));
    REQUIRE(r);
    out.push_back(std::move(*r));
  }
  return out;
}

double element(const TensorView& v, std::int64_t i) {
  double out = 0;
  convert(std::span<const std::byte>(v.data + i * size_of(v.dtype), size_of(v.dtype)), v.dtype,
          std::as_writable_bytes(std::span<double>(&out, 1)), DType::float64, 1);
  return out;
}

// Every element of `local` equals the known value of the full tensor at `box`.
bool holds_known_values(const std::string& fqn, const TensorView& local, const Box& box,
                        const std::vector<std::int64_t>& shape) {
  for (std::int64_t i = 0; i < local.numel(); ++i) {
    std::int64_t index = 0, rest = i, inner = 1;
    for (int d = box.ndim() - 1; d >= 0; --d) {
      index += (box.offsets[d] + rest % box.sizes[d]) * inner;
      rest /= box.sizes[d];
      inner *= shape[d];
    }
    double expected = 0;
    // The value as stored in the tensor's dtype.
    double known = fixtures::known_value(fqn, index, local.dtype);
    std::vector<std::byte> tmp(size_of(local.dtype));
    convert(std::as_bytes(std::span<const double>(&known, 1)), DType::float64, tmp, local.dtype, 1);
    convert(tmp, local.dtype, std::as_writable_bytes(std::span<double>(&expected, 1)), DType::float64, 1);
    if (element(local, i) != expected) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("collector - the seed: keys, meshes and shards per rank, as PyTorch's test_fsdp_ep", "[collector]") {
  auto layout = GENERATE(std::string("flat"), std::string("per_param"));
  CAPTURE(layout);
  auto spec = parse_model_spec(test::seed_spec_json(layout)).value();
  Runtime rt;
  auto ranks = collect(rt, spec);
  const std::vector<int> all{0, 1, 2, 3, 4, 5, 6, 7};
  for (int r = 0; r < 8; ++r) {
    CAPTURE(r);
    const auto& sd = ranks[r].state;
    std::set<std::string> expected_keys;
    for (std::string base : {"net.0.", "second.net.0."}) {
      for (std::string leaf : {"weight", "bias"}) {
        std::string key = base + leaf;
        expected_keys.insert(key);
        REQUIRE(sd.model.contains(key));
        const auto& d = std::get<DTensor>(sd.model.at(key));
        CHECK(d.mesh.ranks() == all);
        REQUIRE(d.placements.size() == 1);
        CHECK(d.placements[0] == Placement::Shard(0));
        CHECK(d.box.sizes[0] == 2);
        CHECK(d.box.offsets[0] == 2 * r);
        CHECK(holds_known_values(key, d.local, d.box, d.global_shape));
      }
    }
    for (int e = 0; e < 4; ++e) {
      for (std::string net : {"net1", "net2"}) {
        for (std::string leaf : {"weight", "bias"}) {
          std::string key = "second.ep_layers." + std::to_string(e) + "." + net + ".0." + leaf;
          if (e != r % 4) {
            CHECK_FALSE(sd.model.contains(key));
            continue;
          }
          expected_keys.insert(key);
          REQUIRE(sd.model.contains(key));
          const auto& d = std::get<DTensor>(sd.model.at(key));
          CHECK(d.mesh.ranks() == std::vector<int>{r % 4, r % 4 + 4});
          CHECK(d.box.sizes[0] == 8);
          CHECK(d.box.offsets[0] == 8 * (r / 4));
          CHECK(holds_known_values(key, d.local, d.box, d.global_shape));
        }
      }
    }
    std::set<std::string> model_keys, optim_keys;
    for (const auto& [k, v] : sd.model) model_keys.insert(k);
    for (const auto& [k, v] : sd.optim.state) optim_keys.insert(k);
    CHECK(model_keys == expected_keys);
    CHECK(optim_keys == model_keys);
    for (const auto& [fqn, states] : sd.optim.state) {
      CAPTURE(fqn);
      REQUIRE(states.contains("exp_avg"));
      REQUIRE(states.contains("exp_avg_sq"));
      REQUIRE(states.contains("step"));
      const auto& step = std::get<TensorView>(states.at("step"));
      CHECK(step.shape.empty());
      CHECK(step.dtype == DType::float32);
      CHECK(element(step, 0) == 1.0);  // a fresh Adam: one step with zero gradients
      const auto& avg = std::get<DTensor>(states.at("exp_avg"));
      const auto& param = std::get<DTensor>(sd.model.at(fqn));
      CHECK(avg.box == param.box);
      CHECK(avg.mesh == param.mesh);
      CHECK(element(avg.local, 0) == 0.0);
    }
    REQUIRE(sd.optim.param_groups.size() == 1);
    CHECK(sd.optim.param_groups[0].params.size() == model_keys.size());
  }
}

namespace {

std::string uneven_spec(int n, const std::string& dtype) {
  std::string N = std::to_string(n);
  return R"({"world_size": )" + N + R"(,
    "meshes": {"global": {"shape": [)" + N + R"(], "dim_names": ["fsdp"]}},
    "units": [{"name": "a", "prefix": "a.", "mesh": "global", "layout": "flat"},
              {"name": "b", "prefix": "b.", "mesh": "global", "layout": "per_param"}],
    "params": [{"unit": "a", "name": "w", "shape": [5, 3], "dtype": ")" + dtype + R"("},
               {"unit": "a", "name": "bias", "shape": [7], "dtype": ")" + dtype + R"("},
               {"unit": "a", "name": "running_mean", "shape": [3], "buffer": true},
               {"unit": "b", "name": "w", "shape": [)" + std::to_string(n + 1) + R"(, 2], "dtype": ")" + dtype + R"("},
               {"unit": "b", "name": "frozen", "shape": [4], "frozen": true}],
    "optimizer": {"type": "adam", "lr": 0.1, "weight_decay": 0.5}})";
}

}  // namespace

TEST_CASE("collector - shards and full values hold the registered elements, uneven sizes and dtypes",
          "[collector]") {
  auto n = GENERATE(3, 6, 8);
  auto dtype = GENERATE(std::string("float32"), std::string("bfloat16"));
  auto full = GENERATE(false, true);
  CAPTURE(n, dtype, full);
  auto spec = parse_model_spec(uneven_spec(n, dtype)).value();
  Runtime rt;
  auto ranks = collect(rt, spec, {.full_state_dict = full});
  for (int r = 0; r < n; ++r) {
    CAPTURE(r);
    const auto& sd = ranks[r].state;
    CHECK(sd.model.size() == 5);
    for (const auto& [fqn, value] : sd.model) {
      CAPTURE(fqn);
      const ParamSpec* param = nullptr;
      for (const auto& p : spec.params) {
        if (fqn == p.unit + "." + p.name) param = &p;
      }
      REQUIRE(param);
      if (param->buffer || full) {
        REQUIRE_FALSE(is_dtensor(value));
        CHECK(local_view(value).shape == param->shape);
        CHECK(holds_known_values(fqn, local_view(value), whole_box(param->shape), param->shape));
      } else {
        const auto& d = std::get<DTensor>(value);
        Range rows = shard_range(param->shape[0], n, r);
        CHECK(d.box.offsets[0] == rows.offset);
        CHECK(d.box.sizes[0] == rows.length);
        CHECK(holds_known_values(fqn, d.local, d.box, param->shape));
      }
    }
    // Adam with weight decay: the first step's exp_avg is (1 - beta1) * wd * p.
    for (const auto& [fqn, states] : sd.optim.state) {
      CAPTURE(fqn);
      const auto& avg = local_view(states.at("exp_avg"));
      const auto& value = local_view(sd.model.at(fqn));
      for (std::int64_t i = 0; i < value.numel(); ++i) {
        double g = 0.5 * element(value, i);
        double expected = 0;
        double exact = 0.1 * g;
        std::vector<std::byte> tmp(size_of(avg.dtype));
        convert(std::as_bytes(std::span<const double>(&exact, 1)), DType::float64, tmp, avg.dtype, 1);
        convert(tmp, avg.dtype, std::as_writable_bytes(std::span<double>(&expected, 1)), DType::float64, 1);
        CHECK(element(avg, i) == Approx(expected));
      }
    }
    CHECK_FALSE(sd.optim.state.contains("b.frozen"));
    CHECK_FALSE(sd.optim.state.contains("a.running_mean"));
  }
}

TEST_CASE("collector - ignore_frozen_params leaves frozen params out", "[collector]") {
  auto spec = parse_model_spec(uneven_spec(3, "float32")).value();
  Runtime rt;
  auto ranks = collect(rt, spec, {.ignore_frozen_params = true});
  for (const auto& rank : ranks) {
    CHECK_FALSE(rank.state.model.contains("b.frozen"));
    CHECK(rank.state.model.contains("b.w"));
  }
}

TEST_CASE("collector - full + cpu_offload: only rank 0 holds values, only its own experts, and "
          "experts_to_rank0 gives it every expert", "[collector]") {
  auto spec = parse_model_spec(test::seed_spec_json("flat")).value();
  auto to_rank0 = GENERATE(false, true);
  CAPTURE(to_rank0);
  Runtime rt;
  auto ranks = collect(rt, spec, {.full_state_dict = true, .cpu_offload = true, .experts_to_rank0 = to_rank0});
  for (int r = 1; r < 8; ++r) {
    CHECK(ranks[r].state.model.empty());
    CHECK(ranks[r].state.optim.state.empty());
  }
  const auto& sd = ranks[0].state;
  for (int e = 0; e < 4; ++e) {
    std::string key = "second.ep_layers." + std::to_string(e) + ".net2.0.weight";
    CAPTURE(key);
    if (e != 0 && !to_rank0) {
      CHECK_FALSE(sd.model.contains(key));
      continue;
    }
    REQUIRE(sd.model.contains(key));
    const auto& v = std::get<TensorView>(sd.model.at(key));
    CHECK(v.shape == std::vector<std::int64_t>{16, 16});
    CHECK(holds_known_values(key, v, whole_box({16, 16}), {16, 16}));
    CHECK(sd.optim.state.at(key).contains("exp_avg_sq"));
    CHECK(element(local_view(sd.optim.state.at(key).at("step")), 0) == 1.0);
  }
  CHECK(sd.model.size() == (to_rank0 ? 20u : 8u));
}

TEST_CASE("collector - inconsistent requests are errors naming the problem", "[collector]") {
  auto spec = parse_model_spec(test::seed_spec_json("flat")).value();
  Runtime rt;
  auto world = make_local_world(rt, 4).value();  // the spec says 8
  auto built = rt.spawn(Model::build(spec, 0, world[0])).get();
  REQUIRE_FALSE(built);
  CHECK(built.error().message.find("world_size 8") != std::string::npos);

  auto world8 = make_local_world(rt, 8).value();
  std::vector<TaskHandle<StateDict>> handles;
  for (int r = 0; r < 8; ++r) {
    handles.push_back(rt.spawn(rt.make_strand(), [](const ModelSpec& s, int rank,
                                                    std::shared_ptr<Communicator> w) -> Task<StateDict> {
      auto model = co_await Model::build(s, rank, std::move(w));
      if (!model) co_return fail(model.error());
      (*model)->allocate();
      fixtures::fill_known_values(**model);
      co_return co_await get_state_dict(**model, {.experts_to_rank0 = true});
    }(spec, r, world8[r])));
  }
  for (auto& h : handles) {
    auto r = h.get();
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("experts_to_rank0 needs full_state_dict") != std::string::npos);
  }
}

TEST_CASE("collector - units on different submeshes overlap: a slow global group does not hold up the experts",
          "[collector]") {
  using namespace std::chrono_literals;
  auto spec = parse_model_spec(test::seed_spec_json("flat")).value();
  Runtime rt;
  rt.tracer().enable();
  auto world = make_local_world(rt, 8).value();
  std::vector<TaskHandle<void>> handles;
  for (int r = 0; r < 8; ++r) {
    // The 8-rank group (root, second) answers 300 ms late; the 2-rank expert groups at once.
    auto delayed = std::make_shared<test::DelayedCommunicator>(
        world[r], [](int size) { return size == 8 ? std::chrono::milliseconds(300) : std::chrono::milliseconds(0); });
    handles.push_back(rt.spawn(rt.make_strand(), [](const ModelSpec& s, int rank, std::shared_ptr<Communicator> w,
                                                    Tracer& tracer) -> Task<void> {
      auto model = co_await Model::build(s, rank, std::move(w));
      if (!model) co_return fail(model.error());
      (*model)->allocate();
      fixtures::fill_known_values(**model);
      (*model)->trace_to(&tracer);
      auto state = co_await get_state_dict(**model);
      if (!state) co_return fail(state.error());
      co_return Result<void>{};
    }(spec, r, delayed, rt.tracer())));
  }
  for (auto& h : handles) REQUIRE(h.get());
  for (int r = 0; r < 8; ++r) {
    CAPTURE(r);
    std::map<std::string, SpanRecord> spans;
    for (const auto& s : rt.tracer().spans()) {
      if (s.rank == r && s.category == "gather") spans[s.name] = s;
    }
    REQUIRE(spans.size() == 3);
    const auto& root = spans.at("unit root");
    const auto& expert = spans.at("unit experts/" + std::to_string(r % 4));
    auto end = [](const SpanRecord& s) { return s.start_ns + s.duration_ns; };
    CHECK(end(expert) < end(root));        // the experts finished first...
    CHECK(expert.start_ns < end(root));    // ...while the root unit was in flight
    CHECK(root.duration_ns >= 300'000'000);
  }
  auto path = (std::filesystem::temp_directory_path() / "corockpt_collector_trace.json").string();
  CHECK(rt.tracer().write_chrome_json(path));
  std::filesystem::remove(path);
}

TEST_CASE("collector - a training loop binds its own memory, and mismatched registrations are errors naming them",
          "[collector]") {
  auto spec = parse_model_spec(uneven_spec(3, "float32")).value();
  Runtime rt;
  auto world = make_local_world(rt, 3).value();
  std::vector<TaskHandle<void>> handles;
  for (int r = 0; r < 3; ++r) {
    handles.push_back(rt.spawn(rt.make_strand(), [](const ModelSpec& s, int rank,
                                                    std::shared_ptr<Communicator> w) -> Task<void> {
      auto built = co_await Model::build(s, rank, std::move(w));
      if (!built) co_return fail(built.error());
      Model& model = **built;
      model.allocate();
      fixtures::fill_known_values(model);
      // b.w is [4, 2] over 3 ranks: rows 2, 2, 0.
      std::int64_t rows = shard_range(4, 3, rank).length;
      Tensor mine(DType::float32, {rows, 2}), avg(DType::float32, {rows, 2}), avg_sq(DType::float32, {rows, 2});
      Tensor wrong(DType::float32, {rows + 1, 2});
      auto bad_shape = model.bind("b.w", wrong.view(), {avg.view(), avg_sq.view()});
      if (bad_shape || bad_shape.error().context.fqn != "b.w" ||
          bad_shape.error().message.find("expected float32") == std::string::npos) {
        co_return fail(Errc::internal, "a wrong shape was not refused by name");
      }
      auto bad_states = model.bind("b.w", mine.view(), {avg.view()});
      if (bad_states || bad_states.error().message.find("optimizer states") == std::string::npos) {
        co_return fail(Errc::internal, "a missing state was not refused");
      }
      auto unknown = model.bind("b.nope", mine.view());
      if (unknown || unknown.error().code != Errc::not_found) co_return fail(Errc::internal, "unknown FQN accepted");
      auto flat_param = model.bind("a.w", mine.view());
      if (flat_param || flat_param.error().message.find("bind_flat") == std::string::npos) {
        co_return fail(Errc::internal, "a flat unit's param was bound alone");
      }
      if (auto ok = model.bind("b.w", mine.view(), {avg.view(), avg_sq.view()}); !ok) co_return ok;
      if (rows > 0) mine.values<float>()[0] = 42.0f;
      auto state = co_await get_state_dict(model);
      if (!state) co_return fail(state.error());
      const auto& d = std::get<DTensor>(state->model.at("b.w"));
      if (d.local.data != mine.data()) co_return fail(Errc::internal, "the state dict does not view the bound memory");
      co_return Result<void>{};
    }(spec, r, world[r])));
  }
  for (auto& h : handles) {
    auto r = h.get();
    INFO((r ? std::string() : r.error().to_string()));
    CHECK(r);
  }
}

TEST_CASE("collector - HSDP: Replicate on the replica dim, Shard(0) on the shard dim, and SGD keeps momentum buffers",
          "[collector]") {
  auto layout = GENERATE(std::string("flat"), std::string("per_param"));
  CAPTURE(layout);
  auto spec = parse_model_spec(R"({"world_size": 6,
    "meshes": {"hsdp": {"shape": [2, 3], "dim_names": ["replica", "shard"]}},
    "units": [{"name": "u", "prefix": "", "mesh": "hsdp", "layout": ")" + layout + R"(",
               "replicate_dim": "replica", "shard_dim": "shard"}],
    "params": [{"unit": "u", "name": "w", "shape": [7, 2]}, {"unit": "u", "name": "b", "shape": [2]}],
    "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9}})").value();
  Runtime rt;
  auto ranks = collect(rt, spec);
  for (int r = 0; r < 6; ++r) {
    CAPTURE(r);
    const auto& sd = ranks[r].state;
    const auto& w = std::get<DTensor>(sd.model.at("w"));
    CHECK(w.mesh.ranks() == std::vector<int>{0, 1, 2, 3, 4, 5});
    CHECK(w.placements == std::vector<Placement>{Placement::Replicate(), Placement::Shard(0)});
    Range rows = shard_range(7, 3, r % 3);  // the shard coordinate; replicas hold the same rows
    CHECK(w.box.offsets[0] == rows.offset);
    CHECK(w.box.sizes[0] == rows.length);
    CHECK(holds_known_values("w", w.local, w.box, {7, 2}));
    REQUIRE(sd.optim.state.contains("w"));
    CHECK(sd.optim.state.at("w").size() == 1);  // SGD: no step
    CHECK(is_dtensor(sd.optim.state.at("w").at("momentum_buffer")));
  }
}
