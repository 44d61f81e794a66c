#!/usr/bin/env bash
# corockpt_train --device cuda, end to end: a GPU run resumed on another world size (and
# layout) ends bit-identical to an uninterrupted GPU run; a checkpoint a GPU run wrote
# resumes on the host bit-identical to an uninterrupted host run, and a host checkpoint
# on the GPU; all of them end in the same state (digest): GPU and CPU trajectories are the
# same, bit for bit. Exits 77 (skipped) with the reason when there is no GPU.
# Usage: train_cuda_test.sh CORKPT_TRAIN
set -euo pipefail
train="$1"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
small=(--hidden 64 --experts 4 --layers 2 --checkpoint-every 4 --forward-ms 2)

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "skipped: no GPU (nvidia-smi -L finds none)"; exit 77
fi
# The program's own verdict: built without CUDA, or CUDA sees no device.
status=0
probe="$("$train" "${small[@]}" --device cuda --dir "$work/probe" --steps 0 2>&1)" || status=$?
if [ "$status" -ne 0 ]; then
  if grep -q "unavailable" <<<"$probe"; then echo "skipped: $probe"; exit 77; fi
  echo "FAILED: --device cuda --steps 0"; echo "$probe"; exit 1
fi

expect_identical() {  # label, output
  if grep -q "is bit-identical to an uninterrupted run" <<<"$2"; then
    echo "ok: $1"
  else
    echo "FAILED: $1"; echo "$2"; exit 1
  fi
}
digest_of() { sed -n 's/.*(state digest \([0-9a-f]*\) vs .*/\1/p' <<<"$1"; }

out="$("$train" "${small[@]}" --device cuda --dir "$work/g" --steps 8)"
grep -q "^device: cuda" <<<"$out" || { echo "FAILED: no device line"; echo "$out"; exit 1; }

gpu4="$("$train" "${small[@]}" --device cuda --resume "$work/g" --dir "$work/g4" --world 4 --ep 2 --layout per_param --steps 12)"
expect_identical "cuda: resume 8 -> 4 ranks (mesh 2x2, per_param) on the GPU" "$gpu4"

host8="$("$train" "${small[@]}" --resume "$work/g" --dir "$work/h8" --steps 12)"
expect_identical "a checkpoint written on the GPU resumes on the host" "$host8"

# The GPU's trajectory (steps 1..8 and 9..12 on the GPU) and the host's (steps 9..12 and
# the uninterrupted reference on the host) end in the same state.
gpu_digest="$(digest_of "$gpu4")"
host_digest="$(digest_of "$host8")"
if [ -z "$gpu_digest" ] || [ "$gpu_digest" != "$host_digest" ]; then
  echo "FAILED: GPU and host final states differ: $gpu_digest vs $host_digest"; exit 1
fi
echo "ok: GPU and host states are bit-identical at step 12 (digest $gpu_digest)"

# The other way: a host checkpoint resumes on the GPU, to the same state.
"$train" "${small[@]}" --dir "$work/h" --steps 8 >/dev/null
gpu8="$("$train" "${small[@]}" --device cuda --resume "$work/h" --dir "$work/hg" --steps 12)"
expect_identical "a checkpoint written on the host resumes on the GPU" "$gpu8"
if [ "$(digest_of "$gpu8")" != "$host_digest" ]; then
  echo "FAILED: host -> GPU run ends in another state: $(digest_of "$gpu8") vs $host_digest"; exit 1
fi
echo "ok: host -> GPU ends in the same state"
echo "all cuda training checks passed"
