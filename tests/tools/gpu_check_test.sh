#!/usr/bin/env bash
# tools/gpu-check.sh on a machine without a usable GPU: it exits 77 at once and says why,
# whatever the reason (no driver, a driver that cannot talk to the GPU, no GPU listed).
# A stand-in nvidia-smi plays each machine, so this runs the same with or without a GPU.
# Usage: gpu_check_test.sh GPU_CHECK_SH CORKPT
set -euo pipefail
check="$1"
corockpt="$2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# A bundle as gpu-bundle.sh lays it out (only what the check looks at before the GPU).
mkdir -p "$work/bundle/bin" "$work/fake"
ln -s "$corockpt" "$work/bundle/bin/corockpt"

expect_skip() {  # label, the reason expected
  local status=0 out
  out="$(PATH="$work/fake:/usr/bin:/bin" timeout 20 "$check" "$work/bundle" 2>&1)" || status=$?
  if [ "$status" -ne 77 ] || ! grep -q "skipped: .*$2" <<<"$out"; then
    echo "FAILED: $1: exit $status, expected 77 and a reason with '$2'"; echo "$out"; exit 1
  fi
  echo "ok: $1: $out"
}

# No driver: no nvidia-smi anywhere on PATH (a stand-in that is not executable hides
# none; the PATH above has only the fake folder and the system's, so drop any real one).
if [ -x /usr/bin/nvidia-smi ] || [ -x /bin/nvidia-smi ]; then
  echo "ok: no-driver case not run (this machine has nvidia-smi in /usr/bin)"
else
  expect_skip "no NVIDIA driver" "no nvidia-smi"
fi

cat >"$work/fake/nvidia-smi" <<'FAKE'
#!/bin/sh
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
exit 9
FAKE
chmod +x "$work/fake/nvidia-smi"
expect_skip "a driver that cannot reach the GPU" "couldn't communicate"

cat >"$work/fake/nvidia-smi" <<'FAKE'
#!/bin/sh
exit 0
FAKE
expect_skip "no GPU listed" "lists none"

# Not a bundle: a usage error, not a skip.
status=0
PATH="$work/fake:/usr/bin:/bin" "$check" "$work" >/dev/null 2>&1 || status=$?
[ "$status" -eq 2 ] || { echo "FAILED: a folder that is no bundle: exit $status, expected 2"; exit 1; }
echo "ok: a folder that is no bundle is a usage error (exit 2)"
