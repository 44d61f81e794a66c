#include "corockpt/ckpt/placement.hpp"

#include <charconv>

namespace corockpt {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

}  // namespace

std::string Placement::to_string() const {
  return kind == shard ? "Shard(" + std::to_string(dim) + ")" : "Replicate()";
}

Result<Placement> parse_placement(std::string_view text) {
  const std::string_view s = trim(text);
  if (s == "Replicate()") return Placement::Replicate();
  constexpr std::string_view open = "Shard(";
  if (s.starts_with(open) && s.ends_with(")")) {
    const std::string_view digits = s.substr(open.size(), s.size() - open.size() - 1);
    int dim = -1;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), dim);
    if (ec == std::errc() && end == digits.data() + digits.size() && !digits.empty() && dim >= 0) {
      return Placement::Shard(dim);
    }
  }
  return fail(Errc::invalid_argument, "unknown placement \"" + std::string(text) +
                                          "\" (expected \"Shard(d)\" with d >= 0 or \"Replicate()\")");
}

}  // namespace corockpt
