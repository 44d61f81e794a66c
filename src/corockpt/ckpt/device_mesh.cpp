#include "corockpt/ckpt/device_mesh.hpp"

#include <algorithm>
#include <numeric>
#include <set>

namespace corockpt {

namespace {

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string out = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  if (shape.size() == 1) out += ",";
  return out + ")";
}

std::string names_string(const std::vector<std::string>& names) {
  std::string out = "(";
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i) out += ", ";
    out += "'" + names[i] + "'";
  }
  if (names.size() == 1) out += ",";
  return out + ")";
}

// Row-major strides of the mesh, in ranks.
std::vector<std::int64_t> strides_of(const std::vector<std::int64_t>& shape) {
  std::vector<std::int64_t> strides(shape.size(), 1);
  for (std::size_t d = shape.size(); d-- > 1;) strides[d - 1] = strides[d] * shape[d];
  return strides;
}

// The nested list of ranks, PyTorch style: [[0, 1], [2, 3]].
void append_nested(std::string& out, const std::vector<std::int64_t>& shape,
                   const std::vector<int>& ranks, std::size_t dim, std::size_t& next) {
  out += "[";
  for (std::int64_t i = 0; i < shape[dim]; ++i) {
    if (i) out += ", ";
    if (dim + 1 == shape.size()) {
      out += std::to_string(ranks[next++]);
    } else {
      append_nested(out, shape, ranks, dim + 1, next);
    }
  }
  out += "]";
}

}  // namespace

Result<DeviceMesh> DeviceMesh::create(std::vector<std::int64_t> shape,
                                      std::vector<std::string> dim_names, std::vector<int> ranks) {
  auto bad = [&](std::string why) {
    return fail(Errc::invalid_argument, "device mesh of shape " + shape_string(shape) + ": " + why);
  };
  if (shape.empty()) return bad("a mesh needs at least one dim");
  if (dim_names.size() != shape.size()) {
    return bad(std::to_string(dim_names.size()) + " dim names " + names_string(dim_names) +
               " for " + std::to_string(shape.size()) + " dims");
  }
  std::set<std::string_view> seen_names;
  for (const auto& name : dim_names) {
    if (name.empty()) return bad("a dim name is empty");
    if (!seen_names.insert(name).second) return bad("dim name '" + name + "' is repeated");
  }
  // Checked against ranks.size() as it grows, so the product cannot overflow.
  std::int64_t product = 1;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] < 1) {
      return bad("dim '" + dim_names[d] + "' has size " + std::to_string(shape[d]) + " (must be >= 1)");
    }
    product *= shape[d];
    if (product > static_cast<std::int64_t>(ranks.size())) break;
  }
  if (product != static_cast<std::int64_t>(ranks.size())) {
    return bad("holds " + std::to_string(ranks.size()) + " ranks, but the shape needs its product");
  }
  // A bitmap, not a set: meshes of thousands of ranks are made for every unit.
  std::vector<bool> seen_ranks;
  for (int r : ranks) {
    if (r < 0) return bad("rank " + std::to_string(r) + " is negative");
    if (static_cast<std::size_t>(r) >= seen_ranks.size()) seen_ranks.resize(std::max<std::size_t>(2 * r + 1, 64));
    if (seen_ranks[static_cast<std::size_t>(r)]) return bad("rank " + std::to_string(r) + " is repeated");
    seen_ranks[static_cast<std::size_t>(r)] = true;
  }
  DeviceMesh mesh;
  mesh.shape_ = std::move(shape);
  mesh.dim_names_ = std::move(dim_names);
  mesh.ranks_ = std::move(ranks);
  mesh.index_ranks();
  return mesh;
}

void DeviceMesh::index_ranks() {
  first_ = ranks_.empty() ? 0 : ranks_[0];
  step_ = ranks_.size() < 2 ? 1 : ranks_[1] - ranks_[0];
  for (std::size_t i = 1; i < ranks_.size() && step_ > 0; ++i) {
    if (ranks_[i] - ranks_[i - 1] != step_) step_ = 0;
  }
}

Result<DeviceMesh> DeviceMesh::create(std::vector<std::int64_t> shape,
                                      std::vector<std::string> dim_names) {
  std::int64_t product = 1;
  for (std::int64_t s : shape) {
    // Sizes < 1 and absurd products are reported by the full create.
    if (s < 1 || product > (std::int64_t{1} << 24)) break;
    product *= s;
  }
  std::vector<int> ranks;
  if (product <= (std::int64_t{1} << 24)) {
    ranks.resize(static_cast<std::size_t>(product));
    std::iota(ranks.begin(), ranks.end(), 0);
  }
  return create(std::move(shape), std::move(dim_names), std::move(ranks));
}

Result<int> DeviceMesh::dim_index(std::string_view name) const {
  auto it = std::find(dim_names_.begin(), dim_names_.end(), name);
  if (it == dim_names_.end()) {
    return fail(Errc::invalid_argument, "unknown mesh dim '" + std::string(name) +
                                            "' (the mesh's dims are " + names_string(dim_names_) + ")");
  }
  return static_cast<int>(it - dim_names_.begin());
}

bool DeviceMesh::contains(int rank) const { return index_of(rank).has_value(); }

Result<int> DeviceMesh::index_of(int rank) const {
  std::int64_t index = -1;
  if (step_ > 0) {
    const std::int64_t from_first = std::int64_t{rank} - first_;
    if (from_first >= 0 && from_first % step_ == 0 && from_first / step_ < std::ssize(ranks_)) {
      index = from_first / step_;
    }
  } else if (auto it = std::find(ranks_.begin(), ranks_.end(), rank); it != ranks_.end()) {
    index = it - ranks_.begin();
  }
  if (index < 0) return fail(Errc::not_found, "rank " + std::to_string(rank) + " is not in " + to_string());
  return static_cast<int>(index);
}

Result<std::vector<std::int64_t>> DeviceMesh::coordinate(int rank) const {
  auto index = index_of(rank);
  if (!index) return fail(index.error());
  std::vector<std::int64_t> coord(shape_.size());
  std::int64_t rest = *index;
  for (std::size_t d = shape_.size(); d-- > 0;) {
    coord[d] = rest % shape_[d];
    rest /= shape_[d];
  }
  return coord;
}

Result<DeviceMesh> DeviceMesh::submesh(std::string_view dim, int through_rank) const {
  auto d = dim_index(dim);
  if (!d) return fail(d.error());
  auto index = index_of(through_rank);
  if (!index) return fail(index.error());
  const auto stride = strides_of(shape_)[static_cast<std::size_t>(*d)];
  const auto length = shape_[static_cast<std::size_t>(*d)];
  // Step back to coordinate 0 along `dim`, then walk along it.
  const std::int64_t coord = (*index / stride) % length;
  const std::int64_t first = *index - coord * stride;
  std::vector<int> ranks;
  for (std::int64_t i = 0; i < length; ++i) {
    ranks.push_back(ranks_[static_cast<std::size_t>(first + i * stride)]);
  }
  DeviceMesh sub;
  sub.shape_ = {length};
  sub.dim_names_ = {std::string(dim)};
  sub.ranks_ = std::move(ranks);
  sub.index_ranks();
  return sub;
}

DeviceMesh DeviceMesh::flatten() const {
  DeviceMesh flat;
  flat.shape_ = {static_cast<std::int64_t>(ranks_.size())};
  std::string name;
  for (const auto& n : dim_names_) name += (name.empty() ? "" : "_") + n;
  flat.dim_names_ = {name};
  flat.ranks_ = ranks_;
  flat.first_ = first_;
  flat.step_ = step_;
  return flat;
}

std::string DeviceMesh::to_string() const {
  std::string out = "DeviceMesh(";
  if (shape_.empty()) {
    out += "[]";
  } else {
    std::size_t next = 0;
    append_nested(out, shape_, ranks_, 0, next);
  }
  return out + ", mesh_dim_names=" + names_string(dim_names_) + ")";
}

}  // namespace corockpt
