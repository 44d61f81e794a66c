#pragma once
/// @file
/// How a rank's chunks are spread over its data files, and each file's safetensors header.
/// Shared by the save (which writes the files) and the snapshot (which lays its staging
/// memory out as the files' images, so a save writes from it with no second copy). The
/// layout depends only on the chunks' names, dtypes, boxes and byte sizes, never on
/// their values, so it is computed once per checkpointer.
///
/// File K of rank R is `rank<R>-<K>.safetensors` and holds each tensor's K-th chunk on
/// this rank (at most one chunk per tensor per file, as DCP's Hugging Face reader
/// expects); chunks this rank does not write, and empty ones, are in no file.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "corockpt/ckpt/local_chunks.hpp"

namespace corockpt {

struct DataFileLayout {
  std::string name;                 ///< the file's name in the checkpoint directory
  std::string header;               ///< its first bytes: the length, then the JSON header
  std::vector<std::size_t> chunks;  ///< indices into the chunk list, packed after the header
  std::uint64_t size = 0;           ///< header and chunk bytes
};

/// The data files `rank` writes for `chunks`. With `unit_order` (units, LocalChunk::unit,
/// each once), each file holds its chunks unit by unit in that order (a unit the order
/// leaves out after the others), so a save streaming the file from its start is done
/// reading one unit before it reads the next (AsyncCheckpointer within a staging budget);
/// otherwise as listed. Readers find chunks by the header's offsets: any order reads.
std::vector<DataFileLayout> layout_data_files(std::span<const LocalChunk> chunks, int rank,
                                              std::span<const std::uint32_t> unit_order = {});

/// "rank00003-001.safetensors".
std::string data_file_name(int rank, std::size_t k);

}  // namespace corockpt
