#!/usr/bin/env bash
# corockpt as a C++ team uses it: `cmake --install` the build into a fresh prefix, then
# build tests/package (find_package(corockpt), corockpt::corockpt) outside the tree and
# run it; and configure tests/package/subproject, which takes corockpt by add_subdirectory.
# Usage: package_test.sh BUILD_DIR [CXX_COMPILER_LAUNCHER]
set -euo pipefail
build="$1"
launcher="${2:-}"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

work="$(mktemp -d "${TMPDIR:-/tmp}/corockpt-package.XXXXXX")"
trap 'rm -rf "$work"' EXIT
generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi

echo "== cmake --install $build --prefix $work/prefix"
cmake --install "$build" --prefix "$work/prefix" >"$work/install.log"
for header in corockpt/runtime/runtime.hpp corockpt/ckpt/save.hpp lib/cmake/corockpt/corockptConfig.cmake \
              lib/cmake/corockpt/corockptConfigVersion.cmake; do
  case "$header" in lib/*) path="$work/prefix/$header" ;; *) path="$work/prefix/include/$header" ;; esac
  [[ -f "$path" ]] || { echo "FAILED: the install has no $path"; exit 1; }
done
if find "$work/prefix" -name 'corockpt_train' -o -name 'test_*' | grep -q .; then
  echo "FAILED: the install holds test or example programs"; exit 1
fi

echo "== the consumer project: find_package(corockpt) from $work/prefix"
cmake -S "$here" -B "$work/consumer" "${generator[@]}" -DCMAKE_PREFIX_PATH="$work/prefix" \
      ${launcher:+-DCMAKE_CXX_COMPILER_LAUNCHER="$launcher"} >"$work/consumer-configure.log" \
  || { cat "$work/consumer-configure.log"; exit 1; }
cmake --build "$work/consumer" || exit 1
"$work/consumer/consumer" "$work/checkpoint"

echo "== corockpt as a subproject (configure only)"
cmake -S "$here/subproject" -B "$work/subproject" "${generator[@]}" -DCOROCKPT_SOURCE_DIR="$repo" \
      >"$work/subproject.log" 2>&1 || { cat "$work/subproject.log"; exit 1; }
grep "corockpt as a subproject" "$work/subproject.log"
