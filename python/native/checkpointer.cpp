#include "checkpointer.hpp"

#include <nlohmann/json.hpp>

#include "corockpt/plugins/comm/local/local_communicator.hpp"
#include "corockpt/plugins/device/cuda/cuda_device.hpp"
#include "python_channel.hpp"

namespace corockpt::python {

Result<std::unique_ptr<Checkpointer>> Checkpointer::create(Runtime& runtime, CheckpointIo io,
                                                           const CheckpointerSettings& settings,
                                                           nanobind::object channel,
                                                           const std::vector<ChunkSpec>& chunks) {
  if (settings.when_busy != "wait" && settings.when_busy != "skip") {
    return fail(Errc::invalid_argument, "when_busy must be wait or skip, not " + settings.when_busy);
  }
  std::unique_ptr<Checkpointer> self(new Checkpointer());
  if (channel.is_none()) {
    if (settings.world_size != 1) return fail(Errc::invalid_argument, "a world of several ranks needs a channel");
    auto world = make_local_world(runtime, 1, {.deadline = settings.deadline});
    if (!world) return fail(world.error());
    self->world_ = (*world)[0];
  } else {
    self->world_ = std::make_shared<PythonChannel>(std::move(channel), settings.rank, settings.world_size,
                                                   settings.deadline);
  }
  auto layout = to_local_chunks(chunks);
  if (!layout) return fail(layout.error().with_rank(settings.rank));
  SaveScope scope{.world = self->world_, .rank = settings.rank, .world_size = settings.world_size};
  AsyncCheckpointerOptions options{.root = settings.root,
                                   .when_busy = settings.when_busy == "skip" ? BusyPolicy::skip : BusyPolicy::wait,
                                   .staging_budget = settings.staging_budget,
                                   .keep_last = settings.keep_last,
                                   .step_order = settings.step_order};
  if (settings.cuda_device >= 0) {
    // Snapshots copy on the device's own stream into pinned staging memory, after the
    // work queued on the loop's stream when async_save is called.
    auto device = make_cuda_device(runtime, {.device = settings.cuda_device,
                                             .compute_stream = reinterpret_cast<void*>(settings.cuda_stream)});
    if (!device) return fail(device.error().with_rank(settings.rank));
    options.device = std::move(*device);
  }
  auto checkpointer = AsyncCheckpointer::create(std::move(scope), std::move(*layout), io, runtime.make_strand(),
                                                std::move(options));
  if (!checkpointer) return fail(checkpointer.error());
  self->checkpointer_ = std::move(*checkpointer);
  return self;
}

Checkpointer::~Checkpointer() {
  // Destroying the checkpointer waits for the save in flight, whose exchanges take the
  // GIL on the channel's thread: never wait holding it (Python's GC may be the caller).
  auto release = [this] {
    checkpointer_.reset();
    world_.reset();
  };
  if (Py_IsInitialized() != 0 && PyGILState_Check() != 0) {
    nanobind::gil_scoped_release unlocked;
    release();
  } else {
    release();
  }
}

Result<SaveHandle> Checkpointer::async_save(std::int64_t step, const std::string& user_json,
                                            const std::vector<ChunkSpec>& chunks,
                                            std::vector<std::pair<std::string, std::string>> objects) {
  auto local = to_local_chunks(chunks);
  if (!local) return fail(local.error());
  auto user = nlohmann::json::parse(user_json, nullptr, /*allow_exceptions=*/false);
  if (!user.is_object()) return fail(Errc::invalid_argument, "async_save: the user blob must be a JSON object");
  return checkpointer_->async_save(step, std::move(user), SaveInputs{std::move(*local), std::move(objects)});
}

Result<void> Checkpointer::stop(std::chrono::milliseconds deadline) { return checkpointer_->stop(deadline); }

}  // namespace corockpt::python
