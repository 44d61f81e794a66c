#!/usr/bin/env bash
# PyTorch reads what corockpt writes: the seed saved by `corockpt save` on 8 ranks (and
# a 6-rank per_param bfloat16 variant: uneven shards; and a model of every dtype,
# tests/tools/all_dtypes_spec.json) is loaded by torch.distributed.checkpoint with
# HuggingFaceStorageReader, in one process and on 2 gloo processes (DTensors, Shard(0));
# the tensors expected — names, dtypes, global shapes — come from the spec, never from
# corockpt's metadata, so a missing, misnamed or extra tensor fails; every element is
# checked against its known value after destinations poisoned with values it never has.
# The python is $COROCKPT_TORCH_PYTHON if set, else python3; when python3 has no torch
# (CI) the test is skipped (exit 77).
# usage: torch_interop_test.sh COROCKPT SEED_SPEC TORCH_HF_LOAD_PY
set -euo pipefail
corockpt="$1" spec="$2" loader="$3"
python="${COROCKPT_TORCH_PYTHON:-python3}"
tools="$(cd "$(dirname "$0")/.." && pwd)/tools"
derive="$tools/derive_spec.py" dtypes_spec="$tools/all_dtypes_spec.json"

# Skipped without torch only when no python was named: COROCKPT_TORCH_PYTHON set to a
# python that cannot load torch is a failure, not a skip.
skip=77
[[ -n "${COROCKPT_TORCH_PYTHON:-}" ]] && skip=1
if ! command -v "$python" >/dev/null 2>&1; then
  echo "$([[ $skip == 77 ]] && echo skipped || echo FAILED): no python ($python)"
  exit $skip
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The seed as it is; derived: 6 ranks (uneven shards), per_param, bfloat16; and a
# model of every dtype (float32/bfloat16/float16/float64 params, int64/bool/0-d
# buffers, int32/uint8 frozen params) — one loader run, one torch import.
"$python" "$derive" "$spec" "$work/six.json" --world 6 --mesh2d 3,2 --layout per_param --dtype bfloat16
pairs=()
n=0
for case in "seed:$spec" "6 ranks, per_param, bfloat16:$work/six.json" "every dtype:$dtypes_spec"; do
  what=${case%%:*} case_spec=${case#*:}
  n=$((n + 1))
  ckpt="$work/ckpt$n"
  if ! "$corockpt" save --spec "$case_spec" "$ckpt" >"$work/save.log" 2>&1; then
    echo "FAILED: corockpt save ($what)"; sed 's/^/    | /' "$work/save.log"; exit 1
  fi
  echo "ok: corockpt save ($what): $(tail -n 1 "$work/save.log")"
  pairs+=("$ckpt" "$case_spec")
done
rc=0
"$python" "$loader" --ranks 2 "${pairs[@]}" || rc=$?
case "$rc" in
  0) ;;
  77)
    if ((skip == 77)); then
      echo "skipped: $python cannot import torch; set COROCKPT_TORCH_PYTHON to a python that has it"
    else
      echo "FAILED: COROCKPT_TORCH_PYTHON=$python cannot import torch"
    fi
    exit $skip
    ;;
  *) echo "FAILED: $loader exited $rc"; exit 1 ;;
esac
echo "all checks passed"
