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
