#!/usr/bin/env bash
# The two front-door commands of README.md, each doing all of its own set-up:
#   tools/dev.sh example   install what is missing, build, run the main example
#   tools/dev.sh test      install what is missing, build, run every test (twice:
#                          an optimised build, then one with AddressSanitizer and
#                          UndefinedBehaviorSanitizer, which catches the lifetime bugs
#                          GCC 12's coroutines are prone to)
# Build folders: build/ and build-asan/. Set COROCKPT_JOBS to change the parallelism
# (default 2) and COROCKPT_SANITIZERS=0 to skip the sanitizer pass locally.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs="${COROCKPT_JOBS:-2}"

configure_and_build() {  # dir, extra cmake args...
  local dir="$1"; shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
}

run_tests() {  # dir
  (cd "$1" && ctest --output-on-failure --no-tests=error -j "$jobs")
}

case "${1:-}" in
  example)
    tools/install-deps.sh
    configure_and_build build
    # Until the async training example exists, the main example is a real (small) run of
    # the storage benchmark: uring vs posix vs fio on this machine's disk.
    ./build/bench/corockpt_bench_storage --size-gib 0.25 --pairs 1
    ;;
  test)
    tools/install-deps.sh
    configure_and_build build
    run_tests build
    if [ "${COROCKPT_SANITIZERS:-1}" != 0 ]; then
      configure_and_build build-asan -DCOROCKPT_SANITIZE=ON -DCOROCKPT_BUILD_BENCH=OFF
      run_tests build-asan
    fi
    ;;
  *)
    echo "usage: tools/dev.sh example|test" >&2
    exit 2
    ;;
esac
