#pragma once
/// @file
/// JSON read from checkpoint files, more strictly than nlohmann's defaults: a key
/// repeated in one object is an error (not "the last one wins", which could hide a
/// second tensor of the same name), nesting is bounded (copying or printing a value
/// recurses), and integers are read only when they fit the type asked for. Plus the
/// way untrusted text is quoted in error messages.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "corockpt/runtime/error.hpp"

namespace corockpt::detail {

/// Deeper than any file corockpt writes; shallow enough that recursion over it is safe.
inline constexpr std::size_t max_json_depth = 128;

/// A bound on the text under one key of the top-level object: the bytes of its strings
/// and keys (a lower bound on its JSON size), checked before anything is built.
struct KeyBudget {
  std::string_view key;  ///< empty: no bound
  std::size_t max_bytes = 0;
};

/// Parses `text` as exactly one JSON value (surrounding whitespace allowed; a NUL byte
/// anywhere is an error, where nlohmann alone would stop reading at it).
/// @returns Errc::corrupt saying what is wrong: "malformed JSON: ...", a duplicate key
/// (named), nesting deeper than max_json_depth, or `budget.key` holding more text than
/// `budget.max_bytes` (then no value is built at all, however large the text).
Result<nlohmann::json> parse_strict_json(std::string_view text, KeyBudget budget = {});

/// An integer that fits int64 (not a float, however round).
std::optional<std::int64_t> as_int64(const nlohmann::json& value);
/// A non-negative integer that fits uint64.
std::optional<std::uint64_t> as_uint64(const nlohmann::json& value);
/// A list of integers that fit int64; nullopt when any item does not.
std::optional<std::vector<std::int64_t>> as_int64_list(const nlohmann::json& value);

/// `text` in double quotes for an error message, cut to a readable length (a name
/// from a corrupt file may be megabytes long).
std::string quoted_text(std::string_view text);

/// `value` as JSON text for an error message, cut like `quoted_text`.
std::string excerpt(const nlohmann::json& value);

/// "[2, 3]" for error messages.
std::string list_text(const std::vector<std::int64_t>& values);

}  // namespace corockpt::detail
