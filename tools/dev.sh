#!/usr/bin/env bash
# The two front-door commands of README.md, each doing all of its own set-up:
#   tools/dev.sh example   install what is missing, build, run the main example
#   tools/dev.sh test      install what is missing, build, run every test (twice:
#                          an optimised build, with the Python package's tests on real
#                          torch (tools/python-env.sh), then one with AddressSanitizer
#                          and UndefinedBehaviorSanitizer, which catches the lifetime
#                          bugs GCC 12's coroutines are prone to)
# Build folders: build/ and build-asan/, with Ninja. Set COROCKPT_JOBS to change the
# parallelism (default: the cores) and COROCKPT_SANITIZERS=0 to skip the sanitizer pass.
#
# The compiler cache lives outside the clone (COROCKPT_CCACHE_DIR, default
# ~/.cache/corockpt-ccache), with paths taken relative to the clone, so every clone on
# this machine, and every later CI run, reuses what an earlier one compiled.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs="${COROCKPT_JOBS:-$(nproc)}"
export CCACHE_DIR="${COROCKPT_CCACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/corockpt-ccache}"
export CCACHE_BASEDIR="$PWD"
export CCACHE_NOHASHDIR=true  # debug info names the build folder; a hit is still right
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"
export CCACHE_SLOPPINESS="${CCACHE_SLOPPINESS:-pch_defines,time_macros}"

phase_start=$SECONDS
phase() {  # name: prints how long the phase before it took
  echo "dev.sh: $1 ($((SECONDS - phase_start)) s since the last step)"
  phase_start=$SECONDS
}

configure_and_build() {  # dir, extra cmake args...
  local dir="$1"; shift
  # A folder configured earlier with another generator (Make) cannot switch: start it anew.
  if [ -f "$dir/CMakeCache.txt" ] && ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$dir/CMakeCache.txt"; then
    rm -rf "$dir"
  fi
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
}

run_tests() {  # dir: every test, then the ten slowest with their times
  # (awk reads the whole list: a `head` would close the pipe early, and sort's SIGPIPE,
  # exit 141 under pipefail, would fail a run whose tests all passed)
  local log="$1/Testing/dev-ctest.log" status=0
  mkdir -p "$1/Testing"
  (cd "$1" && ctest --output-on-failure --no-tests=error -j "$jobs") 2>&1 | tee "$log" || status=$?
  echo "dev.sh: the ten slowest tests in $1:"
  grep -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: ' "$log" \
    | sed -E 's/^ *[0-9]+\/[0-9]+ Test +#[0-9]+: (.*[^ .]) *\.+ *(\*\*\*)?[A-Za-z ]+ +([0-9.]+) sec$/\3 \1/' \
    | sort -rn | awk 'NR <= 10 { printf "  %8.2f s  %s\n", $1, substr($0, index($0, " ") + 1) }'
  return "$status"
}

case "${1:-}" in
  example)
    tools/install-deps.sh
    configure_and_build build
    # The async training example: 8 in-process ranks (mesh 2x4) train 20 steps,
    # checkpointing every 5; then 4 ranks (mesh 2x2) resume from the newest checkpoint,
    # train to step 30 and check the result is bit-identical to an uninterrupted run.
    rm -rf build/example-checkpoints
    ./build/examples/corockpt_train --dir build/example-checkpoints --steps 20 --checkpoint-every 5 \
        --trace build/example-trace.json
    ./build/examples/corockpt_train --resume build/example-checkpoints --world 4 --ep 2 --steps 30 \
        --checkpoint-every 5
    echo "Chrome trace of the first run: build/example-trace.json (open it in https://ui.perfetto.dev)"
    ;;
  test)
    tools/install-deps.sh
    if command -v ccache >/dev/null 2>&1; then ccache --zero-stats >/dev/null; fi
    phase "dependencies installed"
    # torch and the package (its extension built in build-python/), in a virtual
    # environment outside the clone; its python runs the Python tests in build/.
    python="$(tools/python-env.sh | tail -n 1)"
    phase "python environment ready ($python)"
    configure_and_build build -DCOROCKPT_PYTHON_TESTS="$python"
    phase "build/ built"
    run_tests build
    phase "build/ tested"
    if [ "${COROCKPT_SANITIZERS:-1}" != 0 ]; then
      # Without the benchmarks and the examples' CUDA kernels (nvcc compiles them once, in
      # the pass above; the sanitizers do not reach into them anyway).
      configure_and_build build-asan -DCOROCKPT_SANITIZE=ON -DCOROCKPT_BUILD_BENCH=OFF -DCOROCKPT_CUDA_KERNELS=OFF
      phase "build-asan/ built"
      run_tests build-asan
      phase "build-asan/ tested"
    fi
    if command -v ccache >/dev/null 2>&1; then
      echo "dev.sh: compiler cache: $(ccache --print-stats 2>/dev/null | awk -F'\t' '$1=="direct_cache_hit"||$1=="preprocessed_cache_hit"{h+=$2} $1=="cache_miss"{m=$2} END{printf "%d hits, %d misses", h, m}')"
    fi
    ;;
  *)
    echo "usage: tools/dev.sh example|test" >&2
    exit 2
    ;;
esac
