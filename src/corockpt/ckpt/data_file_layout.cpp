#include "corockpt/ckpt/data_file_layout.hpp"

#include <algorithm>
#include <cstdio>
#include <map>

#include <nlohmann/json.hpp>

#include "corockpt/ckpt/format/safetensors.hpp"

namespace corockpt {

namespace {

// DCP's Hugging Face convention: where each tensor's chunk sits in the full tensor.
std::map<std::string, std::string> dcp_metadata(std::span<const LocalChunk> chunks, const std::vector<std::size_t>& in_file) {
  nlohmann::json sharding = nlohmann::json::object();
  for (std::size_t i : in_file) sharding[chunks[i].name] = {{"saved_offsets", chunks[i].box.offsets}};
  return {{"DCP_SHARDING_INFO", sharding.dump()}, {"DCP_VERSION", "1.0"}, {"format", "pt"}};
}

std::string safetensors_header(std::span<const LocalChunk> chunks, const std::vector<std::size_t>& in_file) {
  std::vector<SafetensorsEntry> entries;
  std::uint64_t at = 0;
  for (std::size_t i : in_file) {
    const LocalChunk& chunk = chunks[i];
    entries.push_back({chunk.name, chunk.dtype, chunk.box.sizes, at, at + chunk.bytes.size()});
    at += chunk.bytes.size();
  }
  return encode_safetensors_header(entries, dcp_metadata(chunks, in_file));
}

}  // namespace

std::string data_file_name(int rank, std::size_t k) {
  char name[64];
  std::snprintf(name, sizeof name, "rank%05d-%03zu.safetensors", rank, k);
  return name;
}

std::vector<DataFileLayout> layout_data_files(std::span<const LocalChunk> chunks, int rank,
                                              std::span<const std::uint32_t> unit_order) {
  std::vector<DataFileLayout> files;
  std::map<std::string, std::size_t> count;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    const LocalChunk& chunk = chunks[i];
    if (!chunk.writer || chunk.box.empty()) continue;
    const std::size_t k = count[chunk.name]++;
    if (k == files.size()) files.push_back({.name = data_file_name(rank, k)});
    files[k].chunks.push_back(i);
  }
  if (!unit_order.empty()) {
    // A unit's place in the order; units left out go after, in ascending order.
    std::map<std::uint32_t, std::size_t> place;
    for (std::size_t p = 0; p < unit_order.size(); ++p) place.emplace(unit_order[p], p);
    auto place_of = [&](std::size_t i) {
      auto it = place.find(chunks[i].unit);
      return it != place.end() ? it->second : unit_order.size() + chunks[i].unit;
    };
    for (auto& file : files) {
      std::stable_sort(file.chunks.begin(), file.chunks.end(),
                       [&](std::size_t a, std::size_t b) { return place_of(a) < place_of(b); });
    }
  }
  for (auto& file : files) {
    file.header = safetensors_header(chunks, file.chunks);
    file.size = file.header.size();
    for (std::size_t i : file.chunks) file.size += chunks[i].bytes.size();
  }
  return files;
}

}  // namespace corockpt
