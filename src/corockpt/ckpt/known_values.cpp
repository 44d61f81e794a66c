#include "corockpt/ckpt/known_values.hpp"

#include <vector>

namespace corockpt {

namespace {

double read_as_double(const std::byte* element, DType dtype) {
  double out = 0;
  convert({element, size_of(dtype)}, dtype, std::as_writable_bytes(std::span<double>(&out, 1)), DType::float64, 1);
  return out;
}

// The known value as it reads once stored in `dtype`.
double stored(double value, DType dtype) {
  std::byte element[8];
  convert(std::as_bytes(std::span<const double>(&value, 1)), DType::float64, {element, size_of(dtype)}, dtype, 1);
  return read_as_double(element, dtype);
}

}  // namespace

KnownValuesCheck check_known_values(std::span<const LocalChunk> chunks) {
  KnownValuesCheck result;
  for (const LocalChunk& chunk : chunks) {
    const Box& box = chunk.box;
    const std::int64_t n = box.numel();
    const std::size_t size = size_of(chunk.dtype);
    std::vector<std::int64_t> position(box.ndim(), 0);  // within the box, row-major
    for (std::int64_t i = 0; i < n; ++i) {
      std::int64_t index = 0;
      for (int d = 0; d < box.ndim(); ++d) index = index * chunk.shape[d] + box.offsets[d] + position[d];
      const double got = read_as_double(chunk.bytes.data() + i * size, chunk.dtype);
      const double expected = stored(Model::known_value(chunk.name, index, chunk.dtype), chunk.dtype);
      ++result.checked;
      if (got != expected) {
        result.first_mismatch = chunk.name + " element " + std::to_string(index) + ": " + std::to_string(got) +
                                " != " + std::to_string(expected);
        return result;
      }
      for (int d = box.ndim() - 1; d >= 0; --d) {  // next position
        if (++position[d] < box.sizes[d]) break;
        position[d] = 0;
      }
    }
  }
  return result;
}

}  // namespace corockpt
