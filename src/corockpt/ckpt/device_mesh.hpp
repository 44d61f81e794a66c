#pragma once
/// @file
/// `DeviceMesh`: an n-dimensional arrangement of global ranks with named dimensions, as
/// PyTorch's DeviceMesh. Ranks are laid out row-major: for shape (2, 4) the rank at
/// coordinate (i, j) is ranks()[i * 4 + j]. A mesh is a value (copyable, comparable);
/// the communicators for its groups are made and cached elsewhere.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "corockpt/runtime/error.hpp"

namespace corockpt {

class DeviceMesh {
 public:
  /// An empty mesh (no dims, no ranks): only a placeholder to assign to.
  DeviceMesh() = default;

  /// A mesh of `shape` whose dims are called `dim_names`, holding `ranks` row-major.
  /// @returns Errc::invalid_argument naming the problem when the shape is empty or has
  /// a size < 1, the names are not one per dim, empty or repeated, the product of the
  /// shape is not ranks.size(), or a rank is negative or repeated.
  static Result<DeviceMesh> create(std::vector<std::int64_t> shape,
                                   std::vector<std::string> dim_names, std::vector<int> ranks);
  /// The same with ranks 0 .. product(shape)-1 (what init_device_mesh makes).
  static Result<DeviceMesh> create(std::vector<std::int64_t> shape,
                                   std::vector<std::string> dim_names);

  int ndim() const { return static_cast<int>(shape_.size()); }
  /// Number of ranks.
  int size() const { return static_cast<int>(ranks_.size()); }
  const std::vector<std::int64_t>& shape() const { return shape_; }
  const std::vector<std::string>& dim_names() const { return dim_names_; }
  /// Row-major.
  const std::vector<int>& ranks() const { return ranks_; }

  /// The index of the dim called `name`. @returns Errc::invalid_argument naming it and
  /// this mesh's dims when there is none.
  Result<int> dim_index(std::string_view name) const;
  bool contains(int rank) const;
  /// The position of `rank` in ranks() (its rank within the mesh's flattened group),
  /// in constant time when the ranks step evenly (every mesh create(shape, names) makes,
  /// and its submeshes): planning asks it for every rank of meshes of thousands.
  /// @returns Errc::not_found naming the rank and the mesh when it is not in it.
  Result<int> index_of(int rank) const;
  /// The coordinate of `rank`, one entry per dim. @returns Errc::not_found as index_of.
  Result<std::vector<std::int64_t>> coordinate(int rank) const;

  /// The 1-D mesh along `dim` through `through_rank`: the ranks whose coordinates equal
  /// through_rank's on every other dim, in order along `dim` (PyTorch's mesh["dp"] seen
  /// from that rank). Its one dim keeps the name `dim`.
  Result<DeviceMesh> submesh(std::string_view dim, int through_rank) const;

  /// The 1-D mesh of the same ranks in row-major order, its dim named by joining the
  /// dim names with "_" ("dp_ep"). A 1-D mesh flattens to itself.
  DeviceMesh flatten() const;

  /// "DeviceMesh([[0, 1, 2, 3], [4, 5, 6, 7]], mesh_dim_names=('dp', 'ep'))", as PyTorch prints.
  std::string to_string() const;

  friend bool operator==(const DeviceMesh&, const DeviceMesh&) = default;

 private:
  std::vector<std::int64_t> shape_;
  std::vector<std::string> dim_names_;
  std::vector<int> ranks_;
  // ranks_ is first_, first_ + step_, ... when step_ > 0 (set by index_ranks), so
  // index_of need not search.
  int first_ = 0;
  int step_ = 0;
  void index_ranks();
};

}  // namespace corockpt
