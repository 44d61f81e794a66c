#!/usr/bin/env bash
# Builds the format fuzzer with clang-19's libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer (GCC has no libFuzzer; clang 14 cannot compile libstdc++
# 12's <expected>), then runs it from the seed corpus for a bounded time.
#   run_fuzzer.sh [seconds]     default 20; extra libFuzzer flags via FUZZ_FLAGS
# Exits 0 when nothing broke, 1 on a crash or a broken promise (the work folder, with
# the input that did it, is kept and named), 77 when clang++-19 is not installed.
# Seeds are read from a copy: new inputs libFuzzer finds never land in the repository.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../../.." && pwd)"
seconds="${1:-20}"

clang="${CLANGXX:-clang++-19}"
if ! command -v "$clang" >/dev/null 2>&1; then
  echo "skipped: $clang not found (tools/install-deps.sh installs clang-19 libclang-rt-19-dev)"
  exit 77
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/corockpt-format-fuzz.XXXXXX")"
keep_work=0
cleanup() { if [ "$keep_work" = 0 ]; then rm -rf "$work"; fi; }
trap cleanup EXIT

# Only what the parsers need. The ckpt sources that box.cpp and the metadata header
# pull in are plain C++; runtime/error.cpp includes Asio's error codes (header-only).
sources=(
  "$here/format_fuzzer.cpp"
  "$repo"/src/corockpt/ckpt/format/*.cpp
  "$repo/src/corockpt/ckpt/dtype.cpp"
  "$repo/src/corockpt/ckpt/box.cpp"
  "$repo/src/corockpt/ckpt/detail/copy_past_cache.cpp"
  "$repo/src/corockpt/ckpt/device_mesh.cpp"
  "$repo/src/corockpt/ckpt/placement.cpp"
  "$repo/src/corockpt/runtime/error.cpp"
)
echo "building the format fuzzer with $clang"
# One object per source, through ccache when there is one (tools/dev.sh points it at a
# cache outside the clone), two at a time: a warm cache makes this build take seconds.
compiler=("$clang")
if command -v ccache >/dev/null 2>&1; then compiler=(ccache "$clang"); fi
flags=(-std=c++23 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=undefined -DASIO_STANDALONE -I"$repo/src")
mkdir "$work/obj"
compile_one() {  # source index
  "${compiler[@]}" "${flags[@]}" -c "${sources[$1]}" -o "$work/obj/$1.o"
}
pids=()
for i in "${!sources[@]}"; do
  compile_one "$i" &
  pids+=($!)
  if ((${#pids[@]} >= 2)); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for pid in "${pids[@]}"; do wait "$pid"; done
"$clang" "${flags[@]}" "$work"/obj/*.o -lisal -o "$work/format_fuzzer"

mkdir "$work/corpus"
cp "$here"/corpus/* "$work/corpus/"

# libFuzzer's own exit code for a crash is 77, which CTest would read as "skipped": ask
# for 1 instead, and map any failure to 1 below.
status=0
# shellcheck disable=SC2086  # FUZZ_FLAGS is a list of flags
"$work/format_fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
  -error_exitcode=1 -timeout_exitcode=1 -artifact_prefix="$work/" -print_final_stats=1 \
  ${FUZZ_FLAGS:-} "$work/corpus" 2>"$work/fuzz.log" || status=$?

grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::average_exec_per_sec)" "$work/fuzz.log" || true
if [ "$status" -ne 0 ]; then
  keep_work=1
  tail -n 60 "$work/fuzz.log"
  echo "format fuzzer FAILED (exit $status); log, binary and crashing input kept in $work"
  exit 1
fi
echo "format fuzzer: no crash in ${seconds}s"
