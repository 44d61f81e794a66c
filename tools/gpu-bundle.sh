#!/usr/bin/env bash
# Builds, here, the bundle that tools/gpu-check.sh runs on a GPU machine: a GPU machine is
# at hand rarely and for minutes, and it has none of our Debian packages, so everything
# the checks need is built beforehand and travels with the working tree (64 MiB at most).
#
#   tools/gpu-bundle.sh [BUNDLE]      default BUNDLE: gpu-bundle/ in the clone (git-ignored)
#
# What the bundle holds (Release, CUDA kernels for sm_90, the H100/H200):
#   bin/   the GPU test programs, corockpt_bench_cuda_copy, corockpt_bench_async,
#          corockpt_train, corockpt; RPATH $ORIGIN/../lib
#   lib/   the shared libraries they need that a bare Linux with a CUDA driver may lack
#          (liburing, ISA-L, ...); libstdc++ and libgcc are linked statically
#   gpu-check.sh, train_cuda_test.sh, MANIFEST (commit, glibc needed, sizes)
# Not in it, on purpose: the CUDA runtime and NCCL. They must match the machine's driver,
# so gpu-check.sh finds them there (the nvidia-* wheels under its Python, or its CUDA
# toolkit). Built without MPI: the GPU machine has no MPI, and one GPU runs one NCCL rank.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle="$(realpath -m "${1:-$root/gpu-bundle}")"
build="$root/build-gpu-bundle"
limit_mib=64

programs=(test_device_cuda test_gpu_checkpoint test_comm_nccl
          corockpt_bench_cuda_copy corockpt_bench_async corockpt_train corockpt)

launcher=()
if command -v ccache >/dev/null 2>&1; then
  export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/corockpt-ccache}" CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi

echo "== configure ($build)"
mkdir -p "$build"
log="$build/configure.log"
if ! cmake -S "$root" -B "$build" -G Ninja "${launcher[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCOROCKPT_WITH_MPI=OFF -DCOROCKPT_WITH_CUDA=ON -DCOROCKPT_CUDA_KERNELS=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DCOROCKPT_BUILD_TESTS=ON -DCOROCKPT_BUILD_EXAMPLES=ON -DCOROCKPT_BUILD_TOOLS=ON \
  -DCOROCKPT_BUILD_BENCH=ON -DCOROCKPT_INSTALL=OFF \
  -DCMAKE_EXE_LINKER_FLAGS="-static-libstdc++ -static-libgcc" \
  -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_INSTALL_RPATH='$ORIGIN/../lib' \
  -DCMAKE_INSTALL_RPATH_USE_LINK_PATH=OFF >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
grep "^-- corockpt:" "$log"
# A bundle without its GPU half would check nothing.
for part in "CUDA plugins" "NCCL communicator" "CUDA kernels (nvcc)"; do
  if ! grep -qF -- "-- corockpt: $part ON" "$log"; then
    echo "gpu-bundle: the build has no $part (see $log)" >&2
    exit 1
  fi
done

echo "== build (${programs[*]})"
cmake --build "$build" --target "${programs[@]}"

rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib"
for program in "${programs[@]}"; do
  path="$(find "$build" -name "$program" -type f -perm -u+x -print -quit)"
  [ -n "$path" ] || { echo "gpu-bundle: $program was not built" >&2; exit 1; }
  cp "$path" "$bundle/bin/"
done
strip --strip-unneeded "$bundle"/bin/*

# Libraries the GPU machine gets elsewhere: glibc's (every Linux has them) and CUDA's
# (they must match its driver). Every other library a program or a carried library names
# (its NEEDED entries: what the loader looks up through its RPATH) is carried beside it.
from_the_machine='^(linux-vdso|ld-linux-x86-64|libc|libm|libdl|libpthread|librt|libcuda|libcudart|libnccl)\.'
carry_needs() {  # ELF file
  local file="$1" name path
  for name in $(readelf -d "$file" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    [[ "$name" =~ $from_the_machine ]] && continue
    [ -e "$bundle/lib/$name" ] && continue
    path="$(ldd "$file" | awk -v n="$name" '$1 == n && $2 == "=>" { print $3 }')"
    [ -n "$path" ] || { echo "gpu-bundle: $file needs $name, which is not found here" >&2; exit 1; }
    cp -L "$path" "$bundle/lib/$name"
    carry_needs "$bundle/lib/$name"
  done
}
for program in "$bundle"/bin/*; do
  carry_needs "$program"
done
if ldd "$bundle"/bin/* | grep -q "not found"; then
  echo "gpu-bundle: some library is not found here:" >&2
  ldd "$bundle"/bin/* | grep "not found" >&2
  exit 1
fi

cp "$root/tools/gpu-check.sh" "$root/tests/examples/train_cuda_test.sh" "$bundle/"

# The newest glibc symbol version any file needs: the GPU machine's glibc must be as new.
glibc_needed="$(objdump -T "$bundle"/bin/* "$bundle"/lib/* 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)"
size_kib="$(du -sk "$bundle" | cut -f1)"
{
  echo "corockpt GPU bundle"
  echo "commit: $(git -C "$root" rev-parse HEAD)$(git -C "$root" diff --quiet HEAD || echo ' (with uncommitted changes)')"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release && echo "$PRETTY_NAME"), $(ldd --version | head -n 1)"
  echo "needs: glibc with $glibc_needed, a CUDA 13 driver, libcudart.so.13 and libnccl.so.2 (found by gpu-check.sh)"
  echo "programs: ${programs[*]}"
  echo "carried libraries: $(cd "$bundle/lib" && ls | tr '\n' ' ')"
  echo "size: $((size_kib / 1024)) MiB"
} > "$bundle/MANIFEST"
cat "$bundle/MANIFEST"

if [ "$size_kib" -gt $((limit_mib * 1024)) ]; then
  echo "gpu-bundle: $((size_kib / 1024)) MiB is over the $limit_mib MiB a device call carries" >&2
  exit 1
fi
echo "bundle ready: $bundle; on the GPU machine: ./$(realpath --relative-to="$root" "$bundle")/gpu-check.sh"
