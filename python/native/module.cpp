// corockpt._native: the engine (engine.hpp) for Python. Tensors cross as pointers and
// byte counts (the Python side checks they are contiguous host memory), so the module
// does not link libtorch and one build serves every torch. Every engine call runs with
// the GIL released. corockpt's errors become the exceptions of corockpt.errors, chosen
// by their code.
#include <nanobind/nanobind.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "checkpointer.hpp"
#include "engine.hpp"

namespace nb = nanobind;
using corockpt::Error;
using corockpt::Result;
using corockpt::SaveHandle;
using corockpt::python::Checkpointer;
using corockpt::python::CheckpointerSettings;
using corockpt::python::ChunkSpec;
using corockpt::python::Engine;
using corockpt::python::ObjectSpec;
using corockpt::python::Reader;

namespace {

/// A corockpt error on its way to Python (see the translator below).
struct ErrorException {
  Error error;
};

template <class T>
T value_or_raise(Result<T> result) {
  if (!result) throw ErrorException{std::move(result.error())};
  if constexpr (!std::is_void_v<T>) return std::move(*result);
}

/// (name, dtype, shape, offsets, sizes, address, bytes, on_cuda, unit), as corockpt.torch
/// builds them.
using ChunkTuple = std::tuple<std::string, std::string, std::vector<std::int64_t>, std::vector<std::int64_t>,
                              std::vector<std::int64_t>, std::uintptr_t, std::uint64_t, bool, std::uint32_t>;

std::vector<ChunkSpec> to_specs(const std::vector<ChunkTuple>& chunks) {
  std::vector<ChunkSpec> specs;
  specs.reserve(chunks.size());
  for (const auto& [name, dtype, shape, offsets, sizes, address, bytes, on_cuda, unit] : chunks) {
    specs.push_back({name, dtype, shape, offsets, sizes, address, bytes, on_cuda, unit});
  }
  return specs;
}

/// Raises corockpt.errors' class for the error's code, with its message and context.
void raise_python_error(const Error& error) {
  nb::object errors = nb::module_::import_("corockpt.errors");
  nb::dict context;
  if (error.context.rank) context["rank"] = *error.context.rank;
  if (!error.context.fqn.empty()) context["fqn"] = error.context.fqn;
  if (!error.context.path.empty()) context["path"] = error.context.path;
  if (!error.context.operation.empty()) context["operation"] = error.context.operation;
  nb::object exception = errors.attr("from_native")(std::string(corockpt::to_string(error.code)), error.message,
                                                     error.to_string(), context);
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exception.ptr())), exception.ptr());
}

}  // namespace

NB_MODULE(_native, m) {
  m.doc() = "corockpt's engine: saves and loads of chunks in caller-owned memory (see corockpt.torch)";

  nb::register_exception_translator([](const std::exception_ptr& pointer, void*) {
    try {
      std::rethrow_exception(pointer);
    } catch (const ErrorException& e) {
      raise_python_error(e.error);
    }
  });

  nb::class_<SaveHandle>(m, "SaveHandle")
      .def_prop_ro("step", &SaveHandle::step)
      .def_prop_ro("skipped", &SaveHandle::skipped)
      .def("done", &SaveHandle::done)
      .def(
          "wait_snapshot", [](SaveHandle& h) { value_or_raise(h.wait_snapshot()); },
          nb::call_guard<nb::gil_scoped_release>())
      // The per-unit fences: a loop that steps some units waits for theirs only, in the
      // order given (the checkpointer's step order); the time blocked adds to the stall.
      .def("snapshot_ready", [](const SaveHandle& h) { return h.snapshot_ready(); })
      .def_prop_ro("unit_count", &SaveHandle::unit_count)
      .def(
          "units_ready",
          [](const SaveHandle& h, const std::vector<std::uint32_t>& units) {
            for (std::uint32_t unit : units) {
              if (!h.snapshot_ready(unit)) return false;
            }
            return true;
          },
          nb::arg("units"))
      .def(
          "wait_units",
          [](SaveHandle& h, const std::vector<std::uint32_t>& units) {
            for (std::uint32_t unit : units) value_or_raise(h.wait_snapshot(unit));
          },
          nb::arg("units"), nb::call_guard<nb::gil_scoped_release>())
      .def(
          "wait_for",
          [](const SaveHandle& h, double seconds) {
            return h.wait_for(std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000)));
          },
          nb::arg("seconds"), nb::call_guard<nb::gil_scoped_release>())
      .def(
          "result", [](const SaveHandle& h) { (void)value_or_raise(h.wait()); },
          nb::call_guard<nb::gil_scoped_release>())
      .def("stall_seconds", [](const SaveHandle& h) { return h.times().stall_seconds; });

  nb::class_<Checkpointer>(m, "Checkpointer")
      .def(
          "async_save",
          [](Checkpointer& c, std::int64_t step, const std::string& user_json, const std::vector<ChunkTuple>& chunks,
             const std::vector<std::pair<std::string, nb::bytes>>& objects) {
            std::vector<ChunkSpec> specs = to_specs(chunks);
            std::vector<std::pair<std::string, std::string>> held;
            for (const auto& [name, bytes] : objects) held.emplace_back(name, std::string(bytes.c_str(), bytes.size()));
            nb::gil_scoped_release unlocked;
            return value_or_raise(c.async_save(step, user_json, specs, std::move(held)));
          },
          nb::arg("step"), nb::arg("user_json"), nb::arg("chunks"), nb::arg("objects"))
      .def(
          "stop",
          [](Checkpointer& c, double seconds) {
            value_or_raise(c.stop(std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000))));
          },
          nb::arg("timeout"), nb::call_guard<nb::gil_scoped_release>())
      .def("stats", [](const Checkpointer& c) {
        const corockpt::CheckpointerStats s = c.stats();
        nb::dict d;
        d["requested"] = s.requested;
        d["committed"] = s.committed;
        d["failed"] = s.failed;
        d["skipped"] = s.skipped;
        d["waited"] = s.waited;
        d["staging_bytes"] = s.staging_bytes;
        d["state_bytes"] = s.state_bytes;
        return d;
      });

  nb::class_<Engine>(m, "Engine")
      .def_static(
          "create", [](std::uint64_t staging_bytes) { return value_or_raise(Engine::create(staging_bytes)); },
          nb::arg("staging_bytes"))
      .def(
          "begin_save", [](Engine& e, const std::string& dir) { return value_or_raise(e.begin_save(dir)); },
          nb::arg("dir"), nb::call_guard<nb::gil_scoped_release>())
      .def(
          "write_rank_data",
          [](Engine& e, const std::string& tmp, int rank, const std::vector<ChunkTuple>& chunks,
             const std::vector<std::pair<std::string, nb::bytes>>& objects, std::uint64_t checksum_block) {
            std::vector<ChunkSpec> specs = to_specs(chunks);
            std::vector<ObjectSpec> held;
            for (const auto& [name, bytes] : objects) held.push_back({name, std::string(bytes.c_str(), bytes.size())});
            Result<std::string> plan;
            {
              nb::gil_scoped_release unlocked;
              plan = e.write_rank_data(tmp, rank, specs, held, checksum_block);
            }
            const std::string bytes = value_or_raise(std::move(plan));  // binary: bytes, not str
            return nb::bytes(bytes.data(), bytes.size());
          },
          nb::arg("tmp"), nb::arg("rank"), nb::arg("chunks"), nb::arg("objects"), nb::arg("checksum_block"))
      .def(
          "commit_save",
          [](Engine& e, const std::vector<nb::bytes>& plans, int world_size, const std::string& user_json,
             std::uint64_t checksum_block, const std::string& tmp, const std::string& dir) {
            std::vector<std::string> texts;
            for (const nb::bytes& plan : plans) texts.emplace_back(plan.c_str(), plan.size());
            nb::gil_scoped_release unlocked;
            return value_or_raise(e.commit_save(texts, world_size, user_json, checksum_block, tmp, dir));
          },
          nb::arg("plans"), nb::arg("world_size"), nb::arg("user_json"), nb::arg("checksum_block"), nb::arg("tmp"),
          nb::arg("dir"))
      .def(
          "abandon_save", [](Engine& e, const std::string& tmp) { value_or_raise(e.abandon_save(tmp)); },
          nb::arg("tmp"), nb::call_guard<nb::gil_scoped_release>())
      .def(
          "open", [](Engine& e, const std::string& dir) { return value_or_raise(e.open(dir)); }, nb::arg("dir"),
          nb::call_guard<nb::gil_scoped_release>(),
          // A Reader uses the engine's runtime and storage until it is destroyed, which at
          // interpreter exit may come after the module's engine is gone.
          nb::keep_alive<0, 1>())
      .def(
          "async_checkpointer",
          [](Engine& e, const std::string& root, int rank, int world_size, nb::object channel,
             const std::vector<ChunkTuple>& chunks, int keep_last, const std::string& when_busy,
             std::uint64_t staging_budget, std::int64_t deadline_ms, int cuda_device, std::uintptr_t cuda_stream,
             const std::vector<std::uint32_t>& step_order) {
            CheckpointerSettings settings{.root = root,
                                          .rank = rank,
                                          .world_size = world_size,
                                          .keep_last = keep_last,
                                          .when_busy = when_busy,
                                          .staging_budget = staging_budget,
                                          .deadline = std::chrono::milliseconds(deadline_ms),
                                          .cuda_device = cuda_device,
                                          .cuda_stream = cuda_stream,
                                          .step_order = step_order};
            return value_or_raise(Checkpointer::create(e.runtime(), e.io(), settings, std::move(channel),
                                                       to_specs(chunks)));
          },
          nb::arg("root"), nb::arg("rank"), nb::arg("world_size"), nb::arg("channel").none(), nb::arg("chunks"),
          nb::arg("keep_last"), nb::arg("when_busy"), nb::arg("staging_budget"), nb::arg("deadline_ms"),
          nb::arg("cuda_device") = -1, nb::arg("cuda_stream") = 0, nb::arg("step_order") = std::vector<std::uint32_t>(),
          nb::keep_alive<0, 1>())  // it runs on the engine's runtime and storage
      .def(
          "latest", [](Engine& e, const std::string& root) { return value_or_raise(e.latest(root)); },
          nb::arg("root"), nb::call_guard<nb::gil_scoped_release>());

  nb::class_<Reader>(m, "Reader")
      .def("metadata_json", &Reader::metadata_json)
      .def(
          "load",
          [](Reader& r, const std::vector<ChunkTuple>& chunks, bool strict) {
            std::vector<ChunkSpec> specs = to_specs(chunks);
            nb::gil_scoped_release unlocked;
            return value_or_raise(r.load(specs, strict));
          },
          nb::arg("chunks"), nb::arg("strict") = true)
      .def(
          "read_objects",
          [](Reader& r, const std::vector<std::string>& names) {
            std::vector<std::string> values;
            {
              nb::gil_scoped_release unlocked;
              values = value_or_raise(r.read_objects(names));
            }
            std::vector<nb::bytes> out;
            for (const auto& v : values) out.emplace_back(v.data(), v.size());
            return out;
          },
          nb::arg("names"));
}
