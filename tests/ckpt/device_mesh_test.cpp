#include "corockpt/ckpt/device_mesh.hpp"

#include <catch2/catch.hpp>

using namespace corockpt;

namespace {

bool mentions(const Error& e, std::string_view what) { return e.message.find(what) != std::string::npos; }

}  // namespace

TEST_CASE("device_mesh - the seed's (2, 4) mesh: coordinates and shape") {
  auto mesh = DeviceMesh::create({2, 4}, {"dp", "tp"}).value();
  CHECK(mesh.ndim() == 2);
  CHECK(mesh.size() == 8);
  CHECK(mesh.shape() == std::vector<std::int64_t>{2, 4});
  CHECK(mesh.dim_names() == std::vector<std::string>{"dp", "tp"});
  CHECK(mesh.ranks() == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7});
  CHECK(mesh.dim_index("tp").value() == 1);
  for (int r = 0; r < 8; ++r) {
    CHECK(mesh.contains(r));
    CHECK(mesh.coordinate(r).value() == std::vector<std::int64_t>{r / 4, r % 4});
  }
  CHECK_FALSE(mesh.contains(8));
  CHECK(mesh.to_string() == "DeviceMesh([[0, 1, 2, 3], [4, 5, 6, 7]], mesh_dim_names=('dp', 'tp'))");
}

TEST_CASE("device_mesh - the dp and tp submeshes through every rank of the seed") {
  auto mesh = DeviceMesh::create({2, 4}, {"dp", "tp"}).value();
  for (int r = 0; r < 8; ++r) {
    INFO("rank " << r);
    auto dp = mesh.submesh("dp", r).value();
    CHECK(dp.ranks() == std::vector<int>{r % 4, r % 4 + 4});
    CHECK(dp.shape() == std::vector<std::int64_t>{2});
    CHECK(dp.dim_names() == std::vector<std::string>{"dp"});
    CHECK(dp.index_of(r).value() == r / 4);
    auto tp = mesh.submesh("tp", r).value();
    const int first = 4 * (r / 4);
    CHECK(tp.ranks() == std::vector<int>{first, first + 1, first + 2, first + 3});
    CHECK(tp.index_of(r).value() == r % 4);
  }
}

TEST_CASE("device_mesh - submeshes of a 3-d mesh over custom ranks") {
  // Ranks 10..21 laid out (3, 2, 2).
  std::vector<int> ranks;
  for (int r = 10; r < 22; ++r) ranks.push_back(r);
  auto mesh = DeviceMesh::create({3, 2, 2}, {"a", "b", "c"}, ranks).value();
  CHECK(mesh.coordinate(17).value() == std::vector<std::int64_t>{1, 1, 1});
  CHECK(mesh.submesh("a", 17).value().ranks() == std::vector<int>{13, 17, 21});
  CHECK(mesh.submesh("b", 17).value().ranks() == std::vector<int>{15, 17});
  CHECK(mesh.submesh("c", 17).value().ranks() == std::vector<int>{16, 17});
  // A submesh of a submesh is a 1-d mesh of its own.
  auto a = mesh.submesh("a", 10).value();
  CHECK(a.submesh("a", 18).value() == mesh.submesh("a", 18).value());
}

TEST_CASE("device_mesh - flatten keeps the ranks row-major and joins the names") {
  auto mesh = DeviceMesh::create({2, 4}, {"dp", "ep"}, {7, 6, 5, 4, 3, 2, 1, 0}).value();
  auto flat = mesh.flatten();
  CHECK(flat.ndim() == 1);
  CHECK(flat.shape() == std::vector<std::int64_t>{8});
  CHECK(flat.dim_names() == std::vector<std::string>{"dp_ep"});
  CHECK(flat.ranks() == mesh.ranks());
  auto one = DeviceMesh::create({8}, {"fsdp"}).value();
  CHECK(one.flatten() == one);
  CHECK(one.to_string() == "DeviceMesh([0, 1, 2, 3, 4, 5, 6, 7], mesh_dim_names=('fsdp',))");
}

TEST_CASE("device_mesh - equality compares shape, names and ranks") {
  auto a = DeviceMesh::create({2}, {"dp"}, {0, 4}).value();
  CHECK(a == DeviceMesh::create({2}, {"dp"}, {0, 4}).value());
  CHECK_FALSE(a == DeviceMesh::create({2}, {"dp"}, {4, 0}).value());
  CHECK_FALSE(a == DeviceMesh::create({2}, {"ep"}, {0, 4}).value());
}

TEST_CASE("device_mesh - invalid meshes are errors saying why") {
  auto check = [](Result<DeviceMesh> r, std::string_view why) {
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
    INFO(r.error().message);
    CHECK(mentions(r.error(), why));
  };
  check(DeviceMesh::create({}, {}, {}), "at least one dim");
  check(DeviceMesh::create({2, 4}, {"dp"}), "1 dim names");
  check(DeviceMesh::create({2, 4}, {"dp", "dp"}), "'dp' is repeated");
  check(DeviceMesh::create({2, 4}, {"dp", ""}), "empty");
  check(DeviceMesh::create({2, 0}, {"dp", "ep"}), "'ep' has size 0");
  check(DeviceMesh::create({2, 4}, {"dp", "ep"}, {0, 1, 2}), "holds 3 ranks");
  check(DeviceMesh::create({2}, {"dp"}, {0, -1}), "rank -1 is negative");
  check(DeviceMesh::create({2}, {"dp"}, {3, 3}), "rank 3 is repeated");
}

TEST_CASE("device_mesh - unknown dims and absent ranks are named") {
  auto mesh = DeviceMesh::create({2, 4}, {"dp", "ep"}).value();
  auto dim = mesh.dim_index("tp");
  REQUIRE_FALSE(dim);
  CHECK(mentions(dim.error(), "'tp'"));
  CHECK(mentions(dim.error(), "('dp', 'ep')"));
  auto sub = mesh.submesh("tp", 0);
  REQUIRE_FALSE(sub);
  CHECK(mentions(sub.error(), "'tp'"));
  auto absent = mesh.coordinate(9);
  REQUIRE_FALSE(absent);
  CHECK(absent.error().code == Errc::not_found);
  CHECK(mentions(absent.error(), "rank 9"));
  CHECK_FALSE(mesh.submesh("dp", 9));
}
