#include "corockpt/ckpt/detail/unit_staging.hpp"

#include <algorithm>
#include <map>

namespace corockpt::detail {

UnitStaging::UnitStaging(std::span<const LocalChunk> chunks, const std::vector<DataFileLayout>& files)
    : ends_(files.size()), passed_(files.size(), 0) {
  std::uint32_t units = 0;
  for (const LocalChunk& chunk : chunks) units = std::max(units, chunk.unit + 1);
  files_left_.assign(units, 0);
  for (std::size_t k = 0; k < files.size(); ++k) {
    std::map<std::uint32_t, std::uint64_t> end_of;  // each unit's last byte in the file, + 1
    std::uint64_t at = files[k].header.size();
    for (std::size_t i : files[k].chunks) {
      at += chunks[i].bytes.size();
      end_of[chunks[i].unit] = at;  // chunks are packed in order: the last one is the end
    }
    for (auto [unit, end] : end_of) {
      ends_[k].emplace_back(end, unit);
      ++files_left_[unit];
    }
    std::sort(ends_[k].begin(), ends_[k].end());
  }
}

std::vector<std::uint32_t> UnitStaging::without_bytes() const {
  std::vector<std::uint32_t> units;
  for (std::uint32_t u = 0; u < files_left_.size(); ++u) {
    if (files_left_[u] == 0) units.push_back(u);
  }
  return units;
}

std::vector<std::uint32_t> UnitStaging::staged(std::size_t file, std::uint64_t staged_end) {
  std::vector<std::uint32_t> done;
  if (file >= ends_.size()) return done;
  auto& ends = ends_[file];
  std::size_t& passed = passed_[file];
  for (; passed < ends.size() && ends[passed].first <= staged_end; ++passed) {
    const std::uint32_t unit = ends[passed].second;
    if (--files_left_[unit] == 0) done.push_back(unit);
  }
  return done;
}

}  // namespace corockpt::detail
