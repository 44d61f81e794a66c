// corockpt_bench_cuda_copy: device-to-host throughput of the snapshot path against the
// hardware's limit, on one GPU.
//
// Snapshot path: the tensor is copied in --chunk-mib chunks, each into a staging buffer of
// a pool on the cuda device's pinned allocator (--buffers of them: the backpressure), by
// Device::copy_to_host (cudaMemcpyAsync on the device's stream, completion through
// cudaLaunchHostFunc into the runtime); a chunk's buffer goes back to the pool as soon as
// its copy ends (where a snapshot would hand it to storage).
// Limit: one cudaMemcpyAsync of the whole tensor into pinned memory of its size, then
// cudaStreamSynchronize.
//
// The GPU is shared with nothing here, but the host may be: the two are alternated
// (limit, snapshot) for --pairs rounds; the summary is the median of the per-round ratios
// with their spread. The last line is `ratio = X.XX` (snapshot / limit; the aim is >= 0.95).
// Without a GPU the program says why and exits 77.

#include <cuda_runtime.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>

#include "bench/bench_support.hpp"
#include "corockpt/plugins/device/cuda/cuda_device.hpp"
#include "corockpt/runtime/buffer_pool.hpp"
#include "corockpt/runtime/runtime.hpp"
#include "corockpt/runtime/when_all.hpp"

namespace corockpt {
namespace {

constexpr std::size_t mib = std::size_t{1} << 20;

struct Options {
  std::size_t size_mib = 1024;
  std::size_t chunk_mib = 64;
  std::size_t buffers = 4;
  std::size_t pairs = 5;
  int device = 0;
};

using bench::Clock;
using bench::seconds_since;
using bench::Spread;
using bench::spread_of;

bool check(cudaError_t code, const char* call) {
  if (code == cudaSuccess) return true;
  std::fprintf(stderr, "%s: %s\n", call, cudaGetErrorString(code));
  return false;
}

Task<void> copy_chunk(Device& device, BufferPool& pool, std::span<const std::byte> chunk) {
  auto staging = co_await pool.acquire();
  if (!staging) co_return fail(staging.error());
  co_return co_await device.copy_to_host(staging->bytes().first(chunk.size()), chunk);
}

Task<void> snapshot(Device& device, BufferPool& pool, std::span<const std::byte> tensor) {
  std::vector<Task<void>> chunks;
  for (std::size_t offset = 0; offset < tensor.size(); offset += pool.buffer_bytes()) {
    chunks.push_back(copy_chunk(device, pool, tensor.subspan(offset, std::min(pool.buffer_bytes(), tensor.size() - offset))));
  }
  auto results = co_await when_all(std::move(chunks));
  co_return all_ok(results);
}

int run(const Options& options) {
  auto count = cuda_device_count();
  if (!count) {
    std::printf("corockpt_bench_cuda_copy: no usable GPU: %s\n", count.error().to_string().c_str());
    return 77;
  }
  cudaDeviceProp properties{};
  if (!check(cudaGetDeviceProperties(&properties, options.device), "cudaGetDeviceProperties")) return 1;
  if (!check(cudaSetDevice(options.device), "cudaSetDevice")) return 1;

  // Scale down rather than run out of memory: the tensor on the device, the same again
  // pinned for the limit, and the pool, on the host.
  std::size_t bytes = options.size_mib * mib;
  std::size_t device_free = 0, device_total = 0;
  if (!check(cudaMemGetInfo(&device_free, &device_total), "cudaMemGetInfo")) return 1;
  const auto host_free = static_cast<std::size_t>(sysconf(_SC_AVPHYS_PAGES)) * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  const std::size_t pool_bytes = options.buffers * options.chunk_mib * mib;
  while (bytes > options.chunk_mib * mib && (bytes > device_free / 2 || bytes + pool_bytes > host_free / 2)) bytes /= 2;
  std::printf("GPU: %s (cuda:%d), %zu MiB device-to-host, chunks of %zu MiB through %zu pinned staging buffers\n",
              properties.name, options.device, bytes / mib, options.chunk_mib, options.buffers);

  Runtime rt;
  auto device = make_cuda_device(rt, {.device = options.device});
  if (!device) {
    std::fprintf(stderr, "%s\n", device.error().to_string().c_str());
    return 1;
  }
  auto tensor = (*device)->allocate(bytes);
  if (!tensor) {
    std::fprintf(stderr, "%s\n", tensor.error().to_string().c_str());
    return 1;
  }
  if (!check(cudaMemset(tensor->data(), 0x5a, bytes), "cudaMemset")) return 1;
  auto pool = BufferPool::create({.buffer_bytes = options.chunk_mib * mib, .buffer_count = options.buffers},
                                 (*device)->staging_allocator());
  if (!pool) {
    std::fprintf(stderr, "%s\n", pool.error().to_string().c_str());
    return 1;
  }
  auto pinned = make_cuda_pinned_allocator(options.device);
  if (!pinned) return 1;
  auto whole = (*pinned)->allocate(bytes, 4096);
  if (!whole) {
    std::fprintf(stderr, "%s\n", whole.error().to_string().c_str());
    return 1;
  }
  cudaStream_t stream = nullptr;
  if (!check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags")) return 1;
  std::span<const std::byte> source = tensor->bytes();

  auto limit_once = [&]() -> double {
    const auto start = Clock::now();
    if (!check(cudaMemcpyAsync(*whole, source.data(), bytes, cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync")) {
      return 0;
    }
    if (!check(cudaStreamSynchronize(stream), "cudaStreamSynchronize")) return 0;
    return static_cast<double>(bytes) / seconds_since(start) / 1e9;
  };
  auto snapshot_once = [&]() -> double {
    const auto start = Clock::now();
    auto done = rt.spawn(snapshot(**device, **pool, source)).get();
    if (!done) {
      std::fprintf(stderr, "snapshot: %s\n", done.error().to_string().c_str());
      return 0;
    }
    return static_cast<double>(bytes) / seconds_since(start) / 1e9;
  };

  // Warm-up: first touches, the pool's pages, the driver's lazy setup.
  limit_once();
  snapshot_once();
  std::vector<double> limits, snapshots, ratios;
  for (std::size_t pair = 0; pair < options.pairs; ++pair) {
    const double limit = limit_once();
    const double ours = snapshot_once();
    if (limit <= 0 || ours <= 0) return 1;
    limits.push_back(limit);
    snapshots.push_back(ours);
    ratios.push_back(ours / limit);
    std::printf("round %zu: one cudaMemcpyAsync %.2f GB/s, snapshot path %.2f GB/s, ratio %.3f\n", pair + 1, limit,
                ours, ours / limit);
  }
  const Spread limit = spread_of(limits);
  const Spread ours = spread_of(snapshots);
  const Spread ratio = spread_of(ratios);
  std::printf("one cudaMemcpyAsync into pinned memory: median %.2f GB/s (%.2f..%.2f)\n", limit.median, limit.min,
              limit.max);
  std::printf("snapshot path (chunks, pinned pool, events):  median %.2f GB/s (%.2f..%.2f)\n", ours.median, ours.min,
              ours.max);
  std::printf("ratio spread over %zu rounds: %.3f..%.3f\n", options.pairs, ratio.min, ratio.max);
  std::printf("ratio = %.2f\n", ratio.median);

  (void)cudaStreamDestroy(stream);
  (*pinned)->deallocate(*whole, bytes);
  return 0;
}

}  // namespace
}  // namespace corockpt

int main(int argc, char* argv[]) {
  corockpt::Options options;
  CLI::App app{"corockpt_bench_cuda_copy: device-to-host throughput of the snapshot path vs one cudaMemcpyAsync"};
  app.add_option("--size-mib", options.size_mib, "bytes copied per run, in MiB (scaled down to fit)");
  app.add_option("--chunk-mib", options.chunk_mib, "staging buffer size, in MiB")->check(CLI::PositiveNumber);
  app.add_option("--buffers", options.buffers, "staging buffers in the pool")->check(CLI::PositiveNumber);
  app.add_option("--pairs", options.pairs, "alternated rounds (at least 5 for a stable median)")
      ->check(CLI::PositiveNumber);
  app.add_option("--device", options.device, "CUDA device ordinal");
  CLI11_PARSE(app, argc, argv);
  return corockpt::run(options);
}
