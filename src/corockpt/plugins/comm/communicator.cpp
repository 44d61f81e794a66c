#include "corockpt/plugins/comm/communicator.hpp"

#include <numeric>
#include <vector>

#include "corockpt/plugins/comm/detail/planned_communicator.hpp"
#include "corockpt/runtime/when_all.hpp"

namespace corockpt {

namespace comm_detail {

Result<void> check_exchange(std::span<const std::byte> send, std::span<const std::size_t> send_counts,
                            std::span<std::byte> recv, std::span<const std::size_t> recv_counts, int size, int rank,
                            int tag, const std::string& what) {
  auto invalid = [&what](const std::string& why) { return fail(Errc::invalid_argument, what + ": " + why); };
  const auto ranks = static_cast<std::size_t>(size);
  if (send_counts.size() != ranks || recv_counts.size() != ranks) {
    return invalid(std::to_string(send_counts.size()) + " send and " + std::to_string(recv_counts.size()) +
                   " receive counts for " + std::to_string(size) + " ranks");
  }
  const auto me = static_cast<std::size_t>(rank);
  if (send_counts[me] != 0 || recv_counts[me] != 0) return invalid("a rank keeps its own part: its counts must be 0");
  const std::size_t sent = std::accumulate(send_counts.begin(), send_counts.end(), std::size_t{0});
  const std::size_t received = std::accumulate(recv_counts.begin(), recv_counts.end(), std::size_t{0});
  if (send.size() != sent || recv.size() != received) {
    return invalid("counts add up to " + std::to_string(sent) + " sent and " + std::to_string(received) +
                   " received bytes, the spans hold " + std::to_string(send.size()) + " and " +
                   std::to_string(recv.size()));
  }
  if (tag < 0 || tag > max_tag) return invalid("tags are 0.." + std::to_string(max_tag));
  return {};
}

}  // namespace comm_detail

Task<void> Communicator::exchange(std::span<const std::byte> send, std::span<const std::size_t> send_counts,
                                  std::span<std::byte> recv, std::span<const std::size_t> recv_counts, int tag) {
  const std::string what = "exchange on " + name();
  if (auto ok = comm_detail::check_exchange(send, send_counts, recv, recv_counts, size(), rank(), tag, what); !ok) {
    co_return fail(std::move(ok.error().with_rank(rank()).with_operation("exchange")));
  }
  // Every send and receive at once: a send may wait for its receive to be posted.
  std::vector<Task<void>> transfers;
  std::size_t sent = 0, received = 0;
  for (int peer = 0; peer < size(); ++peer) {
    const auto p = static_cast<std::size_t>(peer);
    if (send_counts[p] != 0) transfers.push_back(this->send(send.subspan(sent, send_counts[p]), peer, tag));
    if (recv_counts[p] != 0) transfers.push_back(this->recv(recv.subspan(received, recv_counts[p]), peer, tag));
    sent += send_counts[p];
    received += recv_counts[p];
  }
  co_return all_ok(co_await when_all(std::move(transfers)));
}

}  // namespace corockpt
