#pragma once
/// @file
/// `HostMirror`: while it lives, a model in device memory looks like one in host memory —
/// every device view points at a host copy of its bytes — so code written for host
/// memory (set_state_dict, PyTorch's lazy optimizer-state initialisation) runs on it
/// unchanged; `write_back` copies the host copies to the device. For load-time work, not
/// the hot path: it holds a host copy of the whole model.

#include <memory>
#include <vector>

#include "corockpt/ckpt/model.hpp"
#include "corockpt/runtime/task.hpp"

namespace corockpt::detail {

class HostMirror {
 public:
  /// Points `model`'s device views at host copies of their bytes, copied through the
  /// model's device. Nothing changes for a model in host memory.
  /// @returns the device's errors (the model is then unchanged).
  static Task<std::unique_ptr<HostMirror>> make(Model& model);
  /// Copies every host copy back into its device memory.
  Task<void> write_back();
  /// Points the views at their device memory again.
  ~HostMirror();

  HostMirror(const HostMirror&) = delete;
  HostMirror& operator=(const HostMirror&) = delete;

 private:
  struct Mirrored {
    TensorView* view;
    TensorView device_view;
    std::vector<std::byte> host;
  };
  explicit HostMirror(std::shared_ptr<Device> device) : device_(std::move(device)) {}

  std::shared_ptr<Device> device_;
  std::vector<Mirrored> mirrored_;
};

}  // namespace corockpt::detail
