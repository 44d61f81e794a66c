#pragma once
/// @file
/// How the format writes JSON: compact, never throwing on text that is not UTF-8, and
/// objects whose members come in a chosen order (`__metadata__` first, tensors in data
/// order) written in linear time, where nlohmann's ordered_json would search its keys
/// on every insert, quadratic in a checkpoint's thousands of tensors.

#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

namespace corockpt::detail {

/// Compact JSON text of `value`. Strings that are not UTF-8 (JSON holds only UTF-8) are
/// written with U+FFFD in place of the invalid bytes instead of throwing.
template <class BasicJson>
std::string json_text(const BasicJson& value) {
  return value.dump(-1, ' ', false, BasicJson::error_handler_t::replace);
}

/// A JSON object written member by member, in the order added. Keys are not checked
/// for uniqueness: the caller's come from a map or are checked by it.
class JsonObjectWriter {
 public:
  template <class BasicJson>
  void add(std::string_view key, const BasicJson& value) {
    add_text(key, json_text(value));
  }

  /// A member whose value is already JSON text (a nested object written this way).
  void add_text(std::string_view key, std::string_view value_text) {
    if (text_.size() > 1) text_ += ',';
    text_ += json_text(nlohmann::json(key));
    text_ += ':';
    text_ += value_text;
  }

  std::string finish() && { return std::move(text_) + '}'; }

 private:
  std::string text_ = "{";
};

}  // namespace corockpt::detail
