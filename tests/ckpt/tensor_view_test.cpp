#include "corockpt/ckpt/tensor_view.hpp"

#include <catch2/catch.hpp>

using namespace corockpt;

TEST_CASE("tensor_view - numel and nbytes follow the shape and dtype") {
  CHECK(numel(std::vector<std::int64_t>{}) == 1);  // 0-d: a scalar
  CHECK(numel(std::vector<std::int64_t>{3, 0, 2}) == 0);
  std::vector<std::byte> memory(64);
  TensorView v{memory.data(), DType::bfloat16, {4, 3}};
  CHECK(v.space == MemorySpace::host);
  CHECK(v.numel() == 12);
  CHECK(v.nbytes() == 24);
  CHECK(v.bytes().data() == memory.data());
  CHECK(v.bytes().size() == 24);
  CHECK(to_string(MemorySpace::cuda) == "cuda");
}

TEST_CASE("tensor_view - a Tensor owns zeroed storage and its view aliases it") {
  Tensor t(DType::float32, {2, 3});
  CHECK(t.numel() == 6);
  CHECK(t.nbytes() == 24);
  for (float f : t.values<float>()) CHECK(f == 0.0f);
  TensorView v = t.view();
  CHECK(v.data == t.data());
  CHECK(v.shape == t.shape());
  CHECK(v.dtype == DType::float32);
  reinterpret_cast<float*>(v.data)[4] = 2.5f;
  CHECK(t.values<float>()[4] == 2.5f);

  Tensor copy = t;
  CHECK(copy == t);
  copy.values<float>()[0] = 1.0f;
  CHECK_FALSE(copy == t);
  CHECK_FALSE(Tensor(DType::int32, {2, 3}) == Tensor(DType::float32, {2, 3}));
  CHECK_FALSE(Tensor(DType::float32, {3, 2}) == Tensor(DType::float32, {2, 3}));
  Tensor scalar(DType::float64, {});
  CHECK(scalar.nbytes() == 8);
}
