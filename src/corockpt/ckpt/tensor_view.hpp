#pragma once
/// @file
/// `TensorView`: a view of tensor memory the caller owns (the training loop's params,
/// a staging buffer), and `Tensor`: an owning host tensor for tests and full state dicts.
///
/// Both are contiguous and row-major (C order): element (i0, ..., ik) lies at
/// sum(i_d * stride_d) with stride_d = product of shape[d+1:]. Strided memory is not
/// described; a caller with a non-contiguous tensor makes it contiguous first.
/// A 0-d tensor (shape {}) has one element.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "corockpt/ckpt/dtype.hpp"
#include "corockpt/plugins/device/device.hpp"  // MemorySpace: `cuda` memory is never dereferenced on the host

namespace corockpt {

/// Elements of a tensor of this shape: the product of its entries (1 for a 0-d shape).
/// Entries must be >= 0.
inline std::int64_t numel(std::span<const std::int64_t> shape) {
  std::int64_t n = 1;
  for (std::int64_t s : shape) n *= s;
  return n;
}

/// A non-owning view; the memory must outlive it. Copying a view copies the pointer.
struct TensorView {
  std::byte* data = nullptr;
  DType dtype = DType::float32;
  std::vector<std::int64_t> shape;
  MemorySpace space = MemorySpace::host;

  std::int64_t numel() const { return corockpt::numel(shape); }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * size_of(dtype); }
  /// The viewed bytes (only dereferenceable for host memory).
  std::span<std::byte> bytes() const { return {data, nbytes()}; }
};

/// An owning, zero-initialised host tensor. Its storage is aligned for every DType.
class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, std::vector<std::int64_t> shape)
      : dtype_(dtype), shape_(std::move(shape)),
        storage_(static_cast<std::size_t>(corockpt::numel(shape_)) * size_of(dtype_)) {}

  DType dtype() const { return dtype_; }
  const std::vector<std::int64_t>& shape() const { return shape_; }
  std::int64_t numel() const { return corockpt::numel(shape_); }
  std::size_t nbytes() const { return storage_.size(); }

  std::byte* data() { return storage_.data(); }
  const std::byte* data() const { return storage_.data(); }
  std::span<std::byte> bytes() { return storage_; }
  std::span<const std::byte> bytes() const { return storage_; }

  /// The elements as `T`, which must have the dtype's size (e.g. float for float32,
  /// std::uint16_t for bfloat16's bits).
  template <class T>
  std::span<T> values() {
    static_assert(alignof(T) <= alignof(std::max_align_t));
    return {reinterpret_cast<T*>(storage_.data()), storage_.size() / sizeof(T)};
  }
  template <class T>
  std::span<const T> values() const {
    return {reinterpret_cast<const T*>(storage_.data()), storage_.size() / sizeof(T)};
  }

  /// A host view of this tensor's memory, valid while the tensor lives and is not resized.
  TensorView view() { return TensorView{storage_.data(), dtype_, shape_, MemorySpace::host}; }

  /// Same dtype, same shape, same bytes (bitwise: NaNs with equal bits compare equal).
  friend bool operator==(const Tensor&, const Tensor&) = default;

 private:
  DType dtype_ = DType::float32;
  std::vector<std::int64_t> shape_;
  // operator new aligns to __STDCPP_DEFAULT_NEW_ALIGNMENT__ (16), enough for every DType.
  std::vector<std::byte> storage_;
};

}  // namespace corockpt
