#include "corockpt/ckpt/format/strict_json.hpp"

#include <limits>
#include <unordered_set>

#include "corockpt/ckpt/format/json_writing.hpp"

namespace corockpt::detail {

namespace {

using Json = nlohmann::json;

// A first pass over the text that builds nothing: it stops at the first repeated key or
// at too deep a nesting, which the DOM parser cannot report (its callbacks would
// have to discard values, and they are not told about every closing bracket).
class StrictnessCheck final : public nlohmann::json_sax<Json> {
 public:
  explicit StrictnessCheck(KeyBudget budget) : budget_(budget) {}
  std::string problem;

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t& text) override { return spend(text.size()); }
  bool binary(binary_t&) override { return true; }

  bool start_object(std::size_t) override {
    if (!enter()) return false;
    keys_.emplace_back();
    return true;
  }
  bool key(string_t& key) override {
    if (depth_ == 1) in_budget_ = !budget_.key.empty() && key == budget_.key;  // a top-level key
    if (!keys_.back().insert(key).second) {
      problem = "duplicate key " + quoted_text(key);
      return false;
    }
    return depth_ == 1 || spend(key.size());
  }
  bool end_object() override {
    keys_.pop_back();
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override { return enter(); }
  bool end_array() override {
    --depth_;
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const Json::exception& error) override {
    // nlohmann's message quotes the token read so far, which may be most of the input.
    constexpr std::size_t max_shown = 300;
    std::string what = error.what();
    if (what.size() > max_shown) what = what.substr(0, max_shown) + "...";
    problem = "malformed JSON: " + what;
    return false;
  }

 private:
  bool enter() {
    if (++depth_ <= max_json_depth) return true;
    problem = "JSON nested deeper than " + std::to_string(max_json_depth) + " levels";
    return false;
  }

  // Counts text under the budgeted key (with its two quotes); false once over budget.
  bool spend(std::size_t bytes) {
    if (!in_budget_ || depth_ == 0) return true;
    spent_ += bytes + 2;
    if (spent_ <= budget_.max_bytes) return true;
    problem = quoted_text(budget_.key) + " holds more than " + std::to_string(budget_.max_bytes) + " bytes of text";
    return false;
  }

  const KeyBudget budget_;
  bool in_budget_ = false;  // inside the value of the budgeted top-level key
  std::size_t spent_ = 0;
  std::size_t depth_ = 0;
  std::vector<std::unordered_set<std::string>> keys_;  // one per open object
};

}  // namespace

Result<Json> parse_strict_json(std::string_view text, KeyBudget budget) {
  // nlohmann stops at a NUL byte as at the end of a C string, so "{}\0garbage" would
  // pass; JSON allows no raw NUL anywhere (inside strings it must be escaped).
  if (const auto nul = text.find('\0'); nul != std::string_view::npos) {
    return fail(Errc::corrupt, "malformed JSON: a NUL byte at offset " + std::to_string(nul));
  }
  StrictnessCheck check(budget);
  if (!Json::sax_parse(text.begin(), text.end(), &check) || !check.problem.empty()) {
    return fail(Errc::corrupt, check.problem.empty() ? "malformed JSON" : check.problem);
  }
  // The same text passed the check, so this parse succeeds and is shallow.
  return Json::parse(text.begin(), text.end());
}

std::optional<std::int64_t> as_int64(const Json& value) {
  if (value.is_number_unsigned()) {
    const auto v = value.get<std::uint64_t>();
    if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return std::nullopt;
    return static_cast<std::int64_t>(v);
  }
  if (value.is_number_integer()) return value.get<std::int64_t>();
  return std::nullopt;
}

std::optional<std::uint64_t> as_uint64(const Json& value) {
  if (value.is_number_unsigned()) return value.get<std::uint64_t>();
  if (value.is_number_integer() && value.get<std::int64_t>() >= 0) {
    return static_cast<std::uint64_t>(value.get<std::int64_t>());
  }
  return std::nullopt;
}

std::optional<std::vector<std::int64_t>> as_int64_list(const Json& value) {
  if (!value.is_array()) return std::nullopt;
  std::vector<std::int64_t> out;
  out.reserve(value.size());
  for (const auto& item : value) {
    const auto v = as_int64(item);
    if (!v) return std::nullopt;
    out.push_back(*v);
  }
  return out;
}

namespace {
constexpr std::size_t kMaxShown = 200;
}  // namespace

std::string quoted_text(std::string_view text) {
  // JSON escaping shows quotes and control characters unambiguously.
  std::string out = json_text(Json(text.substr(0, kMaxShown)));
  if (text.size() > kMaxShown) out += "...";
  return out;
}

std::string excerpt(const Json& value) {
  std::string out = json_text(value);
  if (out.size() > kMaxShown) out = out.substr(0, kMaxShown) + "...";
  return out;
}

std::string list_text(const std::vector<std::int64_t>& values) {
  std::string out = "[";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(values[i]);
  }
  return out + "]";
}

}  // namespace corockpt::detail
