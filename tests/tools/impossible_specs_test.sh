#!/usr/bin/env bash
# Specs no machine can run are refused up front with a named error, by every command that
# allocates a model (save, load, statedict): a param whose bytes overflow 64 bits
# (invalid_argument naming it), a model larger than the memory this process may take
# (no_memory with the figures, before allocating anything), and a world too large to run
# in one process (invalid_argument). Each command runs under `timeout`: before, the
# second allocated for seconds and ended in `internal: std::bad_alloc`, and the third ran
# on with memory growing.
# usage: impossible_specs_test.sh COROCKPT
set -euo pipefail
corockpt="$1"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() {
  echo "FAILED: $*"
  failures=$((failures + 1))
}

spec() {  # file world shape
  cat >"$1" <<JSON
{
  "world_size": $2,
  "meshes": {"global": {"shape": [$2], "dim_names": ["fsdp"]}},
  "units": [{"name": "root", "prefix": "", "mesh": "global", "layout": "flat"}],
  "params": [{"unit": "root", "name": "a.weight", "shape": $3}],
  "optimizer": {"type": "adam", "lr": 0.1, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
}
JSON
}
spec "$work/overflow.json" 2 "[4294967296, 4294967296]"
spec "$work/huge.json" 2 "[1000000, 1000000]"          # 10.9 TiB as float32 with Adam
spec "$work/wide.json" 100000 "[100000, 4]"
spec "$work/small.json" 2 "[8, 4]"
"$corockpt" save --spec "$work/small.json" "$work/ckpt" >/dev/null

# expect: command... -- the code and a piece of the message the error must hold
expect() {
  local label="$1" code="$2" text="$3"
  shift 3
  local status=0
  timeout 120 "$@" >"$work/out.log" 2>&1 || status=$?
  if ((status == 0)); then
    fail "$label: exited 0"
  elif ((status == 124)); then
    fail "$label: still running after 120 s"
  elif ! grep -q -- "$code: .*$text" "$work/out.log"; then
    fail "$label: no '$code: ... $text' in its error"; sed 's/^/    | /' "$work/out.log" | tail -n 5
  else
    echo "ok: $label: $(grep -m1 -- "$code:" "$work/out.log")"
  fi
}

expect "save, a param of 2^64 elements" invalid_argument 'a.weight.*more bytes than fit in 64 bits' \
  "$corockpt" save --spec "$work/overflow.json" "$work/out1"
for command in save load statedict; do
  case "$command" in
    save) args=("$work/out2") ;;
    load) args=("$work/ckpt") ;;
    statedict) args=(--out "$work/sd.json") ;;
  esac
  expect "$command, a 10.9 TiB model" no_memory 'needs .* TiB of host memory in this process .* may take only' \
    "$corockpt" "$command" --spec "$work/huge.json" "${args[@]}"
done
expect "save, 100000 ranks in one process" invalid_argument '100000 ranks in one process: at most 1024' \
  "$corockpt" save --spec "$work/wide.json" "$work/out3"
expect "statedict, 100000 ranks in one process" invalid_argument '100000 ranks in one process' \
  "$corockpt" statedict --spec "$work/wide.json" --out "$work/sd.json"
for leftover in out1 out2 out3; do
  if compgen -G "$work/$leftover*" >/dev/null; then fail "a refused save left $(compgen -G "$work/$leftover*")"; fi
done

if ((failures)); then
  echo "$failures check(s) FAILED"
  exit 1
fi
echo "all checks passed"
