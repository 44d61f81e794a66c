#pragma once
/// @file
/// The small exchanges of the checkpoint protocols: texts gathered to rank 0, and an
/// outcome (a text, or an error message) broadcast from it, so every rank returns the
/// same result.

#include <optional>
#include <string>
#include <vector>

#include "corockpt/plugins/comm/communicator.hpp"

namespace corockpt::detail {

/// Every rank's `text`, in rank order, on rank 0; an empty vector elsewhere. The sizes
/// go first (an all_gather), then the texts (a gather_v): `*text_posted`, when given,
/// says whether this rank got as far as posting its text, so that after a failure a rank
/// knows whether rank 0 can have received it.
Task<std::vector<std::string>> gather_texts(Communicator& world, const std::string& text,
                                            bool* text_posted = nullptr);

/// Rank 0's `outcome` on every rank (others pass anything). An error arrives as an
/// error with the same code and message.
Task<std::string> broadcast_outcome(Communicator& world, const Result<std::string>& outcome);

}  // namespace corockpt::detail
