#!/usr/bin/env bash
# Installs the Debian packages corockpt builds, tests and benchmarks with.
# Idempotent: packages already present are not touched, and apt is not asked at all
# when nothing is missing, so both README commands can start with it.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libasio-dev liburing-dev catch2 nlohmann-json3-dev libisal-dev libcli11-dev
  libopenmpi-dev openmpi-bin
  fio
  # libFuzzer for the format fuzzer (clang 14 cannot compile libstdc++ 12's <expected>)
  clang-19 libclang-rt-19-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
