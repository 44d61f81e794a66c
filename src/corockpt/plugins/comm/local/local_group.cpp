#include "corockpt/plugins/comm/local/local_group.hpp"

#include <cstring>
#include <utility>

namespace corockpt::local_comm {

// "ranks 1 (world rank 5), 3 (world rank 7)": world ranks where they differ.
std::string LocalGroup::rank_list(const std::vector<int>& ranks) const {
  std::string out = ranks.size() == 1 ? "rank " : "ranks ";
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    out += (i ? ", " : "") + std::to_string(ranks[i]);
    if (world_rank(ranks[i]) != ranks[i]) out += " (world rank " + std::to_string(world_rank(ranks[i])) + ")";
  }
  return out;
}

LocalGroup::LocalGroup(std::string name, std::vector<int> world_ranks)
    : name_(std::move(name)), world_ranks_(std::move(world_ranks)), next_sequence_(world_ranks_.size(), 0) {}

Result<std::uint64_t> LocalGroup::next_sequence(int rank) {
  std::lock_guard lock(mutex_);
  if (broken_because_) return fail(broken_error());
  return next_sequence_.at(static_cast<std::size_t>(rank))++;
}

void LocalGroup::arrive(std::uint64_t sequence, int rank, Contribution contribution) {
  std::lock_guard lock(mutex_);
  if (broken_because_) {
    contribution.done->complete(fail(broken_error()));
    return;
  }
  Rendezvous& meeting = collectives_[sequence];
  if (meeting.arrived.empty()) meeting.arrived.resize(world_ranks_.size());
  meeting.arrived[static_cast<std::size_t>(rank)].emplace(std::move(contribution));
  if (++meeting.count < size()) return;

  // Everyone is here: copy, then release every rank. Nobody can have given up on this
  // collective, since giving up removes it under this same lock.
  std::vector<Contribution> parts;
  parts.reserve(meeting.arrived.size());
  for (auto& part : meeting.arrived) parts.push_back(std::move(*part));
  collectives_.erase(sequence);
  Result<void> outcome = carry_out(parts, *this);
  for (std::size_t r = 0; r < parts.size(); ++r) {
    Result<void> mine = outcome;
    if (!mine) mine.error().with_rank(static_cast<int>(r));
    parts[r].done->complete(std::move(mine));
  }
}

Error LocalGroup::give_up(std::uint64_t sequence, int rank, Error why) {
  std::lock_guard lock(mutex_);
  why.with_rank(rank);
  if (broken_because_ && sequence == broken_at_sequence_ && why.code == broken_because_->code) {
    // Another rank gave up on this collective first (their deadlines passed together):
    // tell the same story.
    why.message = broken_because_->message;
    return why;
  }
  auto found = collectives_.find(sequence);
  if (found != collectives_.end()) {
    std::vector<int> missing;
    for (std::size_t r = 0; r < found->second.arrived.size(); ++r) {
      if (!found->second.arrived[r] && static_cast<int>(r) != rank) missing.push_back(static_cast<int>(r));
    }
    if (!missing.empty()) why.message += "; " + rank_list(missing) + " of " + name_ + " did not arrive";
    for (std::size_t r = 0; r < found->second.arrived.size(); ++r) {
      auto& part = found->second.arrived[r];
      if (!part || static_cast<int>(r) == rank) continue;
      Error theirs = why;
      theirs.with_rank(static_cast<int>(r));
      part->done->complete(fail(std::move(theirs)));
    }
    collectives_.erase(found);
  }
  if (!broken_because_) {
    broken_at_sequence_ = sequence;
    break_group(why);
  }
  return why;
}

std::uint64_t LocalGroup::post_send(int from, int to, int tag, std::span<const std::byte> data,
                                    std::shared_ptr<Completion<void>> done) {
  std::lock_guard lock(mutex_);
  if (broken_because_) {
    done->complete(fail(broken_error()));
    return 0;
  }
  Transfer send{.id = next_transfer_id_++, .send = data, .done = std::move(done)};
  const Route route{from, to, tag};
  auto waiting = unmatched_recvs_.find(route);
  if (waiting == unmatched_recvs_.end() || waiting->second.empty()) {
    const std::uint64_t id = send.id;
    unmatched_sends_[route].push_back(std::move(send));
    return id;
  }
  match(send, waiting->second.front(), route);
  waiting->second.pop_front();
  return send.id;
}

std::uint64_t LocalGroup::post_recv(int from, int to, int tag, std::span<std::byte> data,
                                    std::shared_ptr<Completion<void>> done) {
  std::lock_guard lock(mutex_);
  if (broken_because_) {
    done->complete(fail(broken_error()));
    return 0;
  }
  Transfer recv{.id = next_transfer_id_++, .recv = data, .done = std::move(done)};
  const Route route{from, to, tag};
  auto waiting = unmatched_sends_.find(route);
  if (waiting == unmatched_sends_.end() || waiting->second.empty()) {
    const std::uint64_t id = recv.id;
    unmatched_recvs_[route].push_back(std::move(recv));
    return id;
  }
  match(waiting->second.front(), recv, route);
  waiting->second.pop_front();
  return recv.id;
}

Error LocalGroup::give_up_transfer(std::uint64_t id, Error why) {
  std::lock_guard lock(mutex_);
  auto remove = [id](std::map<Route, std::deque<Transfer>>& queues) {
    for (auto& [route, queue] : queues) {
      for (auto it = queue.begin(); it != queue.end(); ++it) {
        if (it->id == id) {
          queue.erase(it);
          return true;
        }
      }
    }
    return false;
  };
  if (remove(unmatched_sends_)) why.message += "; no matching recv was posted";
  else if (remove(unmatched_recvs_)) why.message += "; no matching send was posted";
  if (!broken_because_) break_group(why);
  return why;
}

Error LocalGroup::broken_error() const {
  const bool timed_out = broken_because_->code == Errc::timeout;
  return Error{Errc::unavailable,
               "communicator " + name_ + " is broken after an earlier " + (timed_out ? "timeout" : "failure") + " (" +
                   broken_because_->message + ")",
               {}, 0};
}

void LocalGroup::break_group(const Error& why) {
  broken_because_ = why;
  const Error error = broken_error();
  for (auto& [sequence, meeting] : collectives_) {
    for (std::size_t r = 0; r < meeting.arrived.size(); ++r) {
      if (!meeting.arrived[r]) continue;
      Error theirs = error;
      theirs.with_rank(static_cast<int>(r)).with_operation(std::string(to_string(meeting.arrived[r]->kind)));
      meeting.arrived[r]->done->complete(fail(std::move(theirs)));
    }
  }
  collectives_.clear();
  for (auto* queues : {&unmatched_sends_, &unmatched_recvs_}) {
    for (auto& [route, queue] : *queues) {
      for (auto& transfer : queue) transfer.done->complete(fail(error));
    }
    queues->clear();
  }
}

void LocalGroup::match(Transfer& send, Transfer& recv, const Route& route) {
  if (send.send.size() != recv.recv.size()) {
    auto [from, to, tag] = route;
    Error mismatch{Errc::invalid_argument,
                   "a send of " + std::to_string(send.send.size()) + " bytes from rank " + std::to_string(from) +
                       " to rank " + std::to_string(to) + " (tag " + std::to_string(tag) + ") met a recv of " +
                       std::to_string(recv.recv.size()) + " bytes",
                   {}, 0};
    send.done->complete(fail(mismatch));
    recv.done->complete(fail(std::move(mismatch)));
    return;
  }
  if (!send.send.empty()) std::memcpy(recv.recv.data(), send.send.data(), send.send.size());
  send.done->complete({});
  recv.done->complete({});
}

}  // namespace corockpt::local_comm
