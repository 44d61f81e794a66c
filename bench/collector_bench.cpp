// corockpt_bench_collector: get_state_dict on 8 in-process ranks (local communicator),
// sharded and full, for a model of `--units` FSDP units of `--params-per-unit` params of
// shape [rows, cols] float32 with Adam. Prints milliseconds per call (median and min over
// `--iterations`), the bytes each rank moves through collectives per call (counted by a
// decorator around every communicator), checked against what the flat layout requires:
// a sharded state dict of a `flat` unit redistributes, each rank receiving only its
// Shard(0) rows that lie in other ranks' slices (about 1/N of a full gather).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench/bench_support.hpp"
#include "corockpt/ckpt/collector.hpp"
#include "corockpt/ckpt/model.hpp"
#include "corockpt/ckpt/model_spec.hpp"
#include "corockpt/plugins/comm/local/local_communicator.hpp"
#include "corockpt/runtime/runtime.hpp"

using namespace corockpt;

namespace {

constexpr int kWorld = 8;

// Bytes one rank sent and received through its communicators (the world and every group
// split from it share one Counters).
struct Counters {
  std::atomic<std::uint64_t> sent{0};
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> operations{0};

  void add(std::uint64_t s, std::uint64_t r) {
    sent += s;
    received += r;
    ++operations;
  }
  void reset() {
    sent = 0;
    received = 0;
    operations = 0;
  }
};

std::uint64_t sum(std::span<const std::size_t> counts) {
  std::uint64_t total = 0;
  for (auto c : counts) total += c;
  return total;
}

// Counts what this rank sends and receives in every operation that succeeds: for a
// gather, its own contribution is sent and everyone else's received; a broadcast's root
// sends the data once and every other rank receives it.
class CountingCommunicator final : public Communicator {
 public:
  CountingCommunicator(std::shared_ptr<Communicator> inner, std::shared_ptr<Counters> counters)
      : inner_(std::move(inner)), counters_(std::move(counters)) {}

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string_view backend() const override { return inner_->backend(); }
  MemorySpace memory_space() const override { return inner_->memory_space(); }
  const std::string& name() const override { return inner_->name(); }

  Task<void> all_gather(std::span<const std::byte> send, std::span<std::byte> recv) override {
    auto ok = co_await inner_->all_gather(send, recv);
    if (ok) counters_->add(send.size(), recv.size() - send.size());
    co_return ok;
  }
  Task<void> all_gather_v(std::span<const std::byte> send, std::span<std::byte> recv,
                          std::span<const std::size_t> counts) override {
    auto ok = co_await inner_->all_gather_v(send, recv, counts);
    if (ok) counters_->add(send.size(), recv.size() - send.size());
    co_return ok;
  }
  Task<void> gather_v(std::span<const std::byte> send, std::span<std::byte> recv, std::span<const std::size_t> counts,
                      int root) override {
    auto ok = co_await inner_->gather_v(send, recv, counts, root);
    if (ok) {
      const bool is_root = inner_->rank() == root;
      counters_->add(is_root ? 0 : send.size(), is_root ? sum(counts) - send.size() : 0);
    }
    co_return ok;
  }
  Task<void> broadcast(std::span<std::byte> data, int root) override {
    auto ok = co_await inner_->broadcast(data, root);
    if (ok) {
      const bool is_root = inner_->rank() == root;
      counters_->add(is_root ? data.size() : 0, is_root ? 0 : data.size());
    }
    co_return ok;
  }
  Task<void> barrier() override {
    auto ok = co_await inner_->barrier();
    if (ok) counters_->add(0, 0);
    co_return ok;
  }
  Task<void> send(std::span<const std::byte> data, int peer, int tag) override {
    auto ok = co_await inner_->send(data, peer, tag);
    if (ok) counters_->add(data.size(), 0);
    co_return ok;
  }
  Task<void> recv(std::span<std::byte> data, int peer, int tag) override {
    auto ok = co_await inner_->recv(data, peer, tag);
    if (ok) counters_->add(0, data.size());
    co_return ok;
  }
  Task<std::shared_ptr<Communicator>> split(int color, int key) override {
    auto group = co_await inner_->split(color, key);
    if (!group) co_return fail(group.error());
    co_return std::shared_ptr<Communicator>(std::make_shared<CountingCommunicator>(*group, counters_));
  }

 private:
  std::shared_ptr<Communicator> inner_;
  std::shared_ptr<Counters> counters_;
};

struct Options {
  std::int64_t rows = 64;
  std::int64_t cols = 64;
  int units = 32;
  int params_per_unit = 64;
  int iterations = 10;
  std::string layout = "flat";
};

ModelSpec make_spec(const Options& o) {
  ModelSpec spec;
  spec.world_size = kWorld;
  spec.meshes.push_back(MeshSpec{"global", {kWorld}, {"fsdp"}});
  for (int u = 0; u < o.units; ++u) {
    UnitSpec unit;
    unit.name = "u" + std::to_string(u);
    unit.prefix = unit.name + ".";
    unit.mesh = "global";
    unit.layout = o.layout == "flat" ? UnitLayout::flat : UnitLayout::per_param;
    spec.units.push_back(std::move(unit));
    for (int p = 0; p < o.params_per_unit; ++p) {
      ParamSpec param;
      param.unit = "u" + std::to_string(u);
      param.name = "p" + std::to_string(p) + ".weight";
      param.shape = {o.rows, o.cols};
      param.dtype = DType::float32;
      spec.params.push_back(std::move(param));
    }
  }
  spec.optimizer = OptimizerSpec{};  // Adam, PyTorch's defaults
  return spec;
}

// Plain coroutine functions (no capturing lambdas; see README's GCC 12 notes).
Task<std::unique_ptr<Model>> build_rank(const ModelSpec& spec, int rank, std::shared_ptr<Communicator> world) {
  auto model = co_await Model::build(spec, rank, std::move(world));
  if (!model) co_return fail(model.error());
  (*model)->allocate();
  co_return std::move(*model);
}

Task<StateDict> collect_rank(Model& model, StateDictOptions options) { return get_state_dict(model, options); }

// Bytes of params and optimizer states this rank holds (flat slices padded as held).
std::uint64_t model_bytes(const Model& model) {
  std::uint64_t total = 0;
  for (const auto& inst : model.instances()) {
    if (inst.is_flat()) {
      total += inst.flat_value.nbytes();
      for (const auto& s : inst.flat_states) total += s.nbytes();
    }
    for (const auto& slot : inst.params) {
      if (inst.is_flat() && !slot.spec->buffer) continue;
      total += slot.value.nbytes();
      for (const auto& s : slot.states) total += s.nbytes();
    }
  }
  return total;
}

std::int64_t overlap(std::int64_t a0, std::int64_t a1, std::int64_t b0, std::int64_t b1) {
  return std::max<std::int64_t>(0, std::min(a1, b1) - std::max(a0, b0));
}

// What a redistribution of `flat` units moving only the needed rows would move for this
// rank: received = the bytes of its Shard(0) rows (value and states) outside its own
// flat slice; sent = the bytes of its slice that lie in other group ranks' rows.
struct Redistribution {
  std::uint64_t received = 0;
  std::uint64_t sent = 0;
};

Redistribution needed_rows(const Model& model) {
  Redistribution out;
  for (const auto& inst : model.instances()) {
    if (!inst.is_flat()) continue;
    const int n = inst.group_size();
    const std::int64_t begin = inst.group_rank * inst.flat_slice;
    const std::int64_t end = begin + inst.flat_slice;
    for (const auto& slot : inst.params) {
      if (slot.spec->buffer) continue;
      const auto& shape = slot.spec->shape;
      std::int64_t row = 1;
      for (std::size_t d = 1; d < shape.size(); ++d) row *= shape[d];
      const std::uint64_t esize = size_of(slot.spec->dtype) * (1 + slot.states.size());
      // Mine: rows held by this rank.
      std::int64_t first = slot.flat_offset + (slot.box.offsets.empty() ? 0 : slot.box.offsets[0] * row);
      std::int64_t count = slot.box.numel();
      out.received += static_cast<std::uint64_t>(count - overlap(first, first + count, begin, end)) * esize;
      // Theirs: other group ranks' rows that lie in this rank's slice.
      for (int k = 0; k < n; ++k) {
        if (k == inst.group_rank) continue;
        Range rows = shard_range(shape.empty() ? 1 : shape[0], n, k);
        std::int64_t f = slot.flat_offset + rows.offset * row;
        out.sent += static_cast<std::uint64_t>(overlap(f, f + rows.length * row, begin, end)) * esize;
      }
    }
  }
  return out;
}

std::uint64_t state_dict_bytes(const StateDict& sd) {
  std::uint64_t total = 0;
  for (const auto& [k, v] : sd.model) total += local_view(v).nbytes();
  for (const auto& [k, states] : sd.optim.state) {
    for (const auto& [name, v] : states) total += local_view(v).nbytes();
  }
  return total;
}

std::string mb(double bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f MB", bytes / 1e6);
  return buf;
}

struct ModeResult {
  std::vector<double> ms;
  double bytes_moved = 0;  // sent + received per rank per call, averaged over ranks
  double bytes_sent = 0;
  double bytes_received = 0;
  double operations = 0;   // per rank per call
  double materialized = 0; // bytes of values in each rank's state dict, averaged
  std::size_t model_keys = 0;
};

int run(const Options& o) {
  const ModelSpec spec = make_spec(o);
  if (auto ok = validate(spec); !ok) {
    std::fprintf(stderr, "invalid spec: %s\n", ok.error().to_string().c_str());
    return 1;
  }
  Runtime rt;
  auto world = make_local_world(rt, kWorld);
  if (!world) {
    std::fprintf(stderr, "%s\n", world.error().to_string().c_str());
    return 1;
  }
  std::vector<std::shared_ptr<Counters>> counters;
  std::vector<Runtime::Strand> strands;
  std::vector<TaskHandle<std::unique_ptr<Model>>> builds;
  for (int r = 0; r < kWorld; ++r) {
    counters.push_back(std::make_shared<Counters>());
    strands.push_back(rt.make_strand());
    auto comm = std::make_shared<CountingCommunicator>((*world)[r], counters.back());
    builds.push_back(rt.spawn(strands.back(), build_rank(spec, r, std::move(comm))));
  }
  std::vector<std::unique_ptr<Model>> models;
  for (auto& h : builds) {
    auto m = h.get();
    if (!m) {
      std::fprintf(stderr, "build: %s\n", m.error().to_string().c_str());
      return 1;
    }
    models.push_back(std::move(*m));
  }

  const std::int64_t total_params = static_cast<std::int64_t>(o.units) * o.params_per_unit;
  const double param_bytes = static_cast<double>(o.rows * o.cols) * 4.0;
  std::printf("corockpt_bench_collector: %d in-process ranks (local communicator), %lld params in %d %s units of %d, "
              "each [%lld, %lld] float32 (%s), Adam\n",
              kWorld, static_cast<long long>(total_params), o.units, o.layout.c_str(), o.params_per_unit,
              static_cast<long long>(o.rows), static_cast<long long>(o.cols), mb(param_bytes).c_str());
  double held = 0;
  for (const auto& m : models) held += static_cast<double>(model_bytes(*m));
  held /= kWorld;
  std::printf("model size per rank: %s (params + exp_avg + exp_avg_sq held; whole model %s)\n", mb(held).c_str(),
              mb(param_bytes * static_cast<double>(total_params) * 3).c_str());
  std::printf("%d iterations per mode, all 8 ranks concurrently, timed from spawning the rank tasks to all done\n\n",
              o.iterations);

  auto measure = [&](bool full) -> std::optional<ModeResult> {
    ModeResult res;
    StateDictOptions options;
    options.full_state_dict = full;
    for (auto& c : counters) c->reset();
    for (int it = 0; it < o.iterations; ++it) {
      std::vector<TaskHandle<StateDict>> handles;
      handles.reserve(kWorld);
      auto start = std::chrono::steady_clock::now();
      for (int r = 0; r < kWorld; ++r) handles.push_back(rt.spawn(strands[r], collect_rank(*models[r], options)));
      std::vector<StateDict> dicts;
      dicts.reserve(kWorld);
      for (auto& h : handles) {
        auto sd = h.get();
        if (!sd) {
          std::fprintf(stderr, "get_state_dict: %s\n", sd.error().to_string().c_str());
          return std::nullopt;
        }
        dicts.push_back(std::move(*sd));
      }
      auto stop = std::chrono::steady_clock::now();
      res.ms.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
      if (it == 0) {
        for (const auto& d : dicts) res.materialized += static_cast<double>(state_dict_bytes(d));
        res.materialized /= kWorld;
        res.model_keys = dicts[0].model.size();
      }
    }
    const double calls = static_cast<double>(o.iterations) * kWorld;
    for (auto& c : counters) {
      res.bytes_sent += static_cast<double>(c->sent.load()) / calls;
      res.bytes_received += static_cast<double>(c->received.load()) / calls;
      res.operations += static_cast<double>(c->operations.load()) / calls;
    }
    res.bytes_moved = res.bytes_sent + res.bytes_received;
    return res;
  };

  // One untimed call of each mode first: Adam's state is initialised on the first call.
  {
    StateDictOptions options;
    std::vector<TaskHandle<StateDict>> handles;
    for (int r = 0; r < kWorld; ++r) handles.push_back(rt.spawn(strands[r], collect_rank(*models[r], options)));
    for (auto& h : handles) {
      if (auto sd = h.get(); !sd) {
        std::fprintf(stderr, "warm-up: %s\n", sd.error().to_string().c_str());
        return 1;
      }
    }
  }

  auto measured_sharded = measure(false);
  if (!measured_sharded) return 1;
  auto measured_full = measure(true);
  if (!measured_full) return 1;
  const ModeResult& sharded = *measured_sharded;
  const ModeResult& full = *measured_full;

  auto report = [&](const char* name, const ModeResult& r) {
    const bench::Spread ms = bench::spread_of(r.ms);
    std::printf("%-8s %.2f ms/call (min %.2f), %s moved per rank per call (sent %s, received %s, %.0f collectives)\n",
                name, ms.median, ms.min, mb(r.bytes_moved).c_str(), mb(r.bytes_sent).c_str(),
                mb(r.bytes_received).c_str(), r.operations);
    std::printf("         state dict per rank: %zu model keys, %s of values\n", r.model_keys,
                mb(r.materialized).c_str());
  };
  report("sharded:", sharded);
  report("full:", full);
  std::printf("sharded bytes moved / full bytes moved = %.3f\n\n",
              full.bytes_moved > 0 ? sharded.bytes_moved / full.bytes_moved : 0.0);

  Redistribution need;
  for (const auto& m : models) {
    auto n = needed_rows(*m);
    need.received += n.received;
    need.sent += n.sent;
  }
  const double need_recv = static_cast<double>(need.received) / kWorld;
  const double need_sent = static_cast<double>(need.sent) / kWorld;
  if (o.layout == "flat") {
    std::printf("note: sharded flat units redistribute: each rank receives only its Shard(0) rows that lie\n"
                "      in other ranks' slices. What the layout requires per rank per call (computed):\n");
    std::printf("      received %s (sent %s, %s in all)\n", mb(need_recv).c_str(), mb(need_sent).c_str(),
                mb(need_recv + need_sent).c_str());
    std::printf("      measured sharded received / full gather's received = %.3f (1/N = %.3f)\n",
                full.bytes_received > 0 ? sharded.bytes_received / full.bytes_received : 0.0, 1.0 / kWorld);
  } else {
    std::printf("note: per_param units hold their Shard(0) rows already: sharded moves nothing (views of the\n"
                "      model's memory); full all-gathers every param (all_gather_v per unit).\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"get_state_dict on 8 in-process ranks: ms per call and bytes moved by collectives per rank"};
  app.add_option("--rows", o.rows, "rows of every param (Shard(0) splits them)")->check(CLI::PositiveNumber);
  app.add_option("--cols", o.cols, "columns of every param")->check(CLI::PositiveNumber);
  app.add_option("--units", o.units, "FSDP units")->check(CLI::PositiveNumber);
  app.add_option("--params-per-unit", o.params_per_unit, "params per unit")->check(CLI::PositiveNumber);
  app.add_option("--iterations", o.iterations, "timed calls per mode")->check(CLI::PositiveNumber);
  app.add_option("--layout", o.layout, "unit layout")->check(CLI::IsMember({"flat", "per_param"}));
  CLI11_PARSE(app, argc, argv);
  return run(o);
}
