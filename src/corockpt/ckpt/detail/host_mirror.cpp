#include "corockpt/ckpt/detail/host_mirror.hpp"

#include "corockpt/ckpt/detail/copy_batch.hpp"

namespace corockpt::detail {

namespace {

/// Every view of `model` that lies in device memory and has bytes.
std::vector<TensorView*> device_views(Model& model) {
  std::vector<TensorView*> views;
  auto consider = [&views](TensorView& view) {
    if (view.data && view.space != MemorySpace::host && view.nbytes() != 0) views.push_back(&view);
  };
  for (auto& inst : model.instances()) {
    for (auto& slot : inst.params) {
      consider(slot.value);
      for (auto& state : slot.states) consider(state);
    }
    consider(inst.flat_value);
    for (auto& state : inst.flat_states) consider(state);
  }
  return views;
}

}  // namespace

Task<std::unique_ptr<HostMirror>> HostMirror::make(Model& model) {
  std::unique_ptr<HostMirror> mirror(new HostMirror(model.device()));
  const std::vector<TensorView*> views = device_views(model);
  if (views.empty()) co_return std::move(mirror);
  if (!model.device()) {
    co_return fail(Errc::invalid_argument, "the model lies in device memory and has no device (Model::set_device)",
                   {.rank = model.rank()});
  }
  CopyBatch batch(model.device().get());
  mirror->mirrored_.reserve(views.size());
  for (TensorView* view : views) {
    Mirrored& m = mirror->mirrored_.emplace_back(Mirrored{view, *view, std::vector<std::byte>(view->nbytes())});
    batch.add(m.host.data(), MemorySpace::host, view->data, view->space, view->nbytes());
  }
  if (auto ok = co_await batch.run(); !ok) {
    mirror->mirrored_.clear();  // nothing was repointed yet
    co_return fail(std::move(ok.error().with_rank(model.rank())));
  }
  for (Mirrored& m : mirror->mirrored_) {
    m.view->data = m.host.data();
    m.view->space = MemorySpace::host;
  }
  co_return std::move(mirror);
}

Task<void> HostMirror::write_back() {
  CopyBatch batch(device_.get());
  for (Mirrored& m : mirrored_) batch.add(m.device_view.data, m.device_view.space, m.host.data(), MemorySpace::host, m.host.size());
  co_return co_await batch.run();
}

HostMirror::~HostMirror() {
  for (Mirrored& m : mirrored_) *m.view = m.device_view;
}

}  // namespace corockpt::detail
