#pragma once
/// @file
/// Which units (LocalChunk::unit) of a rank's data files are wholly staged, as the save
/// streams each file from its start through the staging buffers: a unit is staged once
/// every file holding some of its bytes has staged past the last of them. From then on
/// the save no longer reads that unit's memory, so the training loop may step it
/// (AsyncCheckpointer within a staging budget opens the unit's fence).

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "corockpt/ckpt/data_file_layout.hpp"
#include "corockpt/ckpt/local_chunks.hpp"

namespace corockpt::detail {

class UnitStaging {
 public:
  /// `files`: layout_data_files of `chunks` (best with the step order, so units finish
  /// one after the other).
  UnitStaging(std::span<const LocalChunk> chunks, const std::vector<DataFileLayout>& files);

  /// The units with no bytes in any file (empty, or not this rank's to write): staged
  /// from the start.
  std::vector<std::uint32_t> without_bytes() const;
  /// File `file`'s bytes [0, staged_end) are all staged: the units this completes.
  std::vector<std::uint32_t> staged(std::size_t file, std::uint64_t staged_end);

 private:
  std::vector<std::uint32_t> files_left_;  // per unit: files still to stage past its bytes
  std::vector<std::vector<std::pair<std::uint64_t, std::uint32_t>>> ends_;  // per file: (a unit's end, unit), ascending
  std::vector<std::size_t> passed_;                                         // per file: entries of ends_ already passed
};

}  // namespace corockpt::detail
