#pragma once
// Per-rank bodies shared by the tests of every communicator backend: each runs one
// operation on one rank and checks what that rank ends up with, returning Errc::corrupt
// (naming the group, rank and what was wrong) when the bytes are not what they must be.
#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "corockpt/plugins/comm/communicator.hpp"
#include "corockpt/runtime/when_all.hpp"

namespace corockpt::test {

using Bytes = std::vector<std::byte>;

// Bytes that say who sent them and where they were: a wrong copy cannot go unnoticed.
inline std::byte pattern(int rank, std::size_t i) {
  return static_cast<std::byte>((static_cast<std::size_t>(rank) * 37 + i * 11 + 1) & 0xff);
}

inline Bytes filled(int rank, std::size_t n) {
  Bytes out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = pattern(rank, i);
  return out;
}

inline bool holds_pattern(std::span<const std::byte> got, int rank) {
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i] != pattern(rank, i)) return false;
  }
  return true;
}

inline std::unexpected<Error> wrong(const Communicator& comm, const std::string& what) {
  return fail(Errc::corrupt, comm.name() + " rank " + std::to_string(comm.rank()) + ": " + what);
}

inline Task<void> sleep_for(std::chrono::milliseconds pause) {
  asio::steady_timer timer(co_await asio::this_coro::executor, pause);
  co_await timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
  co_return Result<void>{};
}

inline Task<void> all_gather_rank(std::shared_ptr<Communicator> comm, std::size_t each) {
  Bytes send = filled(comm->rank(), each);
  Bytes recv(each * static_cast<std::size_t>(comm->size()));
  auto done = co_await comm->all_gather(send, recv);
  if (!done) co_return done;
  for (int from = 0; from < comm->size(); ++from) {
    if (!holds_pattern(std::span(recv).subspan(static_cast<std::size_t>(from) * each, each), from)) {
      co_return wrong(*comm, "all_gather slot " + std::to_string(from));
    }
  }
  co_return Result<void>{};
}

// Uneven counts with zeros among them: {3, 0, 5, 1, 0, 7, 2, 4} for 8 ranks.
inline std::vector<std::size_t> uneven_counts(int ranks) {
  static constexpr std::size_t repeating[] = {3, 0, 5, 1, 0, 7, 2, 4};
  std::vector<std::size_t> counts;
  for (int r = 0; r < ranks; ++r) counts.push_back(repeating[r % 8]);
  return counts;
}

inline std::size_t total(const std::vector<std::size_t>& counts) {
  return std::accumulate(counts.begin(), counts.end(), std::size_t{0});
}

// Checks `recv` holds every rank's pattern of its count, back to back.
inline bool holds_gathered(std::span<const std::byte> recv, std::span<const std::size_t> counts) {
  std::size_t offset = 0;
  for (std::size_t from = 0; from < counts.size(); ++from) {
    if (!holds_pattern(recv.subspan(offset, counts[from]), static_cast<int>(from))) return false;
    offset += counts[from];
  }
  return offset == recv.size();
}

inline Task<void> all_gather_v_rank(std::shared_ptr<Communicator> comm) {
  const auto counts = uneven_counts(comm->size());
  Bytes send = filled(comm->rank(), counts[static_cast<std::size_t>(comm->rank())]);
  Bytes recv(total(counts));
  auto done = co_await comm->all_gather_v(send, recv, counts);
  if (!done) co_return done;
  if (!holds_gathered(recv, counts)) co_return wrong(*comm, "all_gather_v result");
  co_return Result<void>{};
}

inline Task<void> gather_v_rank(std::shared_ptr<Communicator> comm, int root) {
  const auto counts = uneven_counts(comm->size());
  Bytes send = filled(comm->rank(), counts[static_cast<std::size_t>(comm->rank())]);
  Bytes recv(comm->rank() == root ? total(counts) : 0);  // only the root receives
  auto done = co_await comm->gather_v(send, recv, counts, root);
  if (!done) co_return done;
  if (comm->rank() == root && !holds_gathered(recv, counts)) co_return wrong(*comm, "gather_v at the root");
  co_return Result<void>{};
}

inline Task<void> broadcast_rank(std::shared_ptr<Communicator> comm, int root) {
  Bytes data = comm->rank() == root ? filled(root, 1000) : Bytes(1000);
  auto done = co_await comm->broadcast(data, root);
  if (!done) co_return done;
  if (!holds_pattern(data, root)) co_return wrong(*comm, "broadcast data");
  co_return Result<void>{};
}

// Two messages on one tag (matched in order) and one on another, around the ring.
inline Task<void> ring_rank(std::shared_ptr<Communicator> comm) {
  const int me = comm->rank(), n = comm->size();
  const int next = (me + 1) % n, prev = (me + n - 1) % n;
  Bytes first = filled(me, 64), second = filled(me + 100, 64), other = filled(me + 200, 8);
  Bytes got_first(64), got_second(64), got_other(8);
  std::vector<Task<void>> exchange;
  exchange.push_back(comm->send(first, next, 7));
  exchange.push_back(comm->send(second, next, 7));
  exchange.push_back(comm->send(other, next, 9));
  exchange.push_back(comm->recv(got_other, prev, 9));
  exchange.push_back(comm->recv(got_first, prev, 7));
  exchange.push_back(comm->recv(got_second, prev, 7));
  if (auto done = all_ok(co_await when_all(std::move(exchange))); !done) co_return done;
  if (!holds_pattern(got_first, prev) || !holds_pattern(got_second, prev + 100) ||
      !holds_pattern(got_other, prev + 200)) {
    co_return wrong(*comm, "ring messages out of order or corrupt");
  }
  co_return Result<void>{};
}

// Bytes rank `from` sends rank `to` in exchange_rank: 0 to 200 of them, some pairs none.
inline std::size_t exchanged(int from, int to) { return static_cast<std::size_t>((from * 7 + to * 3) % 5) * 50; }

// An all-to-all with uneven sizes (some zero); each message says who sent it to whom.
inline Task<void> exchange_rank(std::shared_ptr<Communicator> comm) {
  const int me = comm->rank(), n = comm->size();
  std::vector<std::size_t> send_counts(n, 0), recv_counts(n, 0);
  Bytes send;
  for (int p = 0; p < n; ++p) {
    if (p == me) continue;
    send_counts[p] = exchanged(me, p);
    recv_counts[p] = exchanged(p, me);
    Bytes part = filled(me * 16 + p, send_counts[p]);
    send.insert(send.end(), part.begin(), part.end());
  }
  Bytes recv(total(recv_counts));
  auto done = co_await comm->exchange(send, send_counts, recv, recv_counts, 11);
  if (!done) co_return done;
  std::size_t at = 0;
  for (int p = 0; p < n; ++p) {
    if (!holds_pattern(std::span(recv).subspan(at, recv_counts[p]), p * 16 + me)) {
      co_return wrong(*comm, "exchange: the part from rank " + std::to_string(p));
    }
    at += recv_counts[p];
  }
  // A count for the rank itself is refused on this rank alone, before anything moves.
  std::vector<std::size_t> own(n, 0);
  own[me] = 1;
  Bytes one(1);
  auto refused = co_await comm->exchange(one, own, one, own, 11);
  if (refused || refused.error().code != Errc::invalid_argument) co_return wrong(*comm, "exchange: own part accepted");
  co_return Result<void>{};
}

// A 2 x (size / 2) mesh like the seed's 2x4: dp = {r % cols, r % cols + cols}, tp = the
// row {0..cols-1} or {cols..size-1}.
struct Mesh {
  std::shared_ptr<Communicator> dp, tp;
};

inline Task<Mesh> split_mesh(std::shared_ptr<Communicator> world) {
  const int r = world->rank(), cols = world->size() / 2;
  auto dp = co_await world->split(r % cols, r);
  if (!dp) co_return fail(dp.error());
  auto tp = co_await world->split(r / cols, r);
  if (!tp) co_return fail(tp.error());
  co_return Mesh{*dp, *tp};
}

// Records the spans of the two gathers, to show they were in flight at the same time.
inline Task<void> mesh_rank(std::shared_ptr<Communicator> world) {
  const int r = world->rank(), cols = world->size() / 2;
  const auto row = static_cast<std::size_t>(cols);
  auto mesh = co_await split_mesh(world);
  if (!mesh) co_return fail(mesh.error());
  auto& [dp, tp] = *mesh;
  if (dp->size() != 2 || dp->rank() != r / cols || dp->name() != "world/split(" + std::to_string(r % cols) + ")") {
    co_return wrong(*dp, "dp group shape");
  }
  if (tp->size() != cols || tp->rank() != r % cols || tp->name() != "world/split(" + std::to_string(r / cols) + ")") {
    co_return wrong(*tp, "tp group shape");
  }
  if (dp->backend() != world->backend()) co_return wrong(*dp, "backend");

  // Both gathers issued at once, on different groups.
  Bytes send = filled(r, 32);
  Bytes dp_recv(2 * 32), tp_recv(row * 32);
  std::vector<Task<void>> both;
  both.push_back(dp->all_gather(send, dp_recv));
  both.push_back(tp->all_gather(send, tp_recv));
  if (auto done = all_ok(co_await when_all(std::move(both))); !done) co_return done;
  for (int i = 0; i < 2; ++i) {
    if (!holds_pattern(std::span(dp_recv).subspan(32 * static_cast<std::size_t>(i), 32), r % cols + cols * i)) {
      co_return wrong(*dp, "dp gather");
    }
  }
  for (int i = 0; i < cols; ++i) {
    if (!holds_pattern(std::span(tp_recv).subspan(32 * static_cast<std::size_t>(i), 32), (r / cols) * cols + i)) {
      co_return wrong(*tp, "tp gather");
    }
  }
  co_return Result<void>{};
}

// Every rank but `absent` enters a barrier; `absent` enters nothing.
inline Task<void> barrier_unless(std::shared_ptr<Communicator> comm, int absent) {
  if (comm->rank() == absent) co_return Result<void>{};
  co_return co_await comm->barrier();
}

inline Task<void> barrier_only(std::shared_ptr<Communicator> comm) { co_return co_await comm->barrier(); }

// All ranks gather 4 bytes each, but rank `short_rank`'s receive buffer is a byte short.
inline Task<void> short_recv_on(std::shared_ptr<Communicator> comm, int short_rank) {
  Bytes send(4);
  Bytes recv(4 * static_cast<std::size_t>(comm->size()) - (comm->rank() == short_rank ? 1 : 0));
  co_return co_await comm->all_gather(send, recv);
}

// Rank 0 sends 10 bytes; rank 1 expects 12. The other ranks do nothing.
inline Task<void> mismatched_transfer(std::shared_ptr<Communicator> comm) {
  if (comm->rank() > 1) co_return Result<void>{};
  Bytes data(comm->rank() == 0 ? 10 : 12);
  if (comm->rank() == 0) co_return co_await comm->send(data, 1, 0);
  co_return co_await comm->recv(data, 0, 0);
}

}  // namespace corockpt::test
