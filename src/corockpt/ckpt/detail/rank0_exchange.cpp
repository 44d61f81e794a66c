#include "corockpt/ckpt/detail/rank0_exchange.hpp"

#include <cstdint>
#include <cstring>

namespace corockpt::detail {

Task<std::vector<std::string>> gather_texts(Communicator& world, const std::string& text, bool* text_posted) {
  if (text_posted) *text_posted = false;
  const std::uint64_t mine = text.size();
  std::vector<std::uint64_t> sizes(world.size());
  if (auto ok = co_await world.all_gather(std::as_bytes(std::span(&mine, 1)), std::as_writable_bytes(std::span(sizes)));
      !ok) {
    co_return fail(ok.error());
  }
  std::vector<std::size_t> counts(sizes.begin(), sizes.end());
  std::size_t total = 0;
  for (auto c : counts) total += c;
  std::string all(world.rank() == 0 ? total : 0, '\0');
  if (text_posted) *text_posted = true;
  if (auto ok = co_await world.gather_v(std::as_bytes(std::span(text)), std::as_writable_bytes(std::span(all)), counts, 0);
      !ok) {
    co_return fail(ok.error());
  }
  std::vector<std::string> texts;
  if (world.rank() != 0) co_return texts;
  std::size_t at = 0;
  for (auto c : counts) {
    texts.push_back(all.substr(at, c));
    at += c;
  }
  co_return texts;
}

Task<std::string> broadcast_outcome(Communicator& world, const Result<std::string>& outcome) {
  // Header: [ok flag, error code, text length], then the text.
  std::uint64_t header[3] = {0, 0, 0};
  std::string text;
  if (world.rank() == 0) {
    header[0] = outcome.has_value();
    header[1] = outcome ? 0 : static_cast<std::uint64_t>(outcome.error().code);
    text = outcome ? *outcome : outcome.error().to_string();
    header[2] = text.size();
  }
  if (auto ok = co_await world.broadcast(std::as_writable_bytes(std::span(header)), 0); !ok) co_return fail(ok.error());
  text.resize(header[2]);
  if (auto ok = co_await world.broadcast(std::as_writable_bytes(std::span(text)), 0); !ok) co_return fail(ok.error());
  if (header[0]) co_return text;
  if (world.rank() == 0) co_return fail(outcome.error());
  co_return fail(static_cast<Errc>(header[1]), "rank 0: " + text);
}

}  // namespace corockpt::detail
