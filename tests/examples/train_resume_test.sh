#!/usr/bin/env bash
# corockpt_train, end to end: a run resumed from a checkpoint — on the same 8 ranks, on 4
# ranks with another mesh and layout, and under mpirun 8 -> 4 processes — ends
# bit-identical to an uninterrupted run; SIGTERM stops the run with its last committed
# checkpoint intact and resumable.
# Usage: train_resume_test.sh CORKPT_TRAIN CORKPT_CLI [MPIEXEC]
set -euo pipefail
train="$1"
cli="$2"
mpiexec="${3:-}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
small=(--hidden 64 --experts 4 --layers 2 --checkpoint-every 4)

expect_identical() {  # label, output
  if grep -q "is bit-identical to an uninterrupted run" <<<"$2"; then
    echo "ok: $1"
  else
    echo "FAILED: $1"; echo "$2"; exit 1
  fi
}

"$train" "${small[@]}" --dir "$work/a" --steps 8 >/dev/null
expect_identical "resume 8 -> 8 ranks" "$("$train" "${small[@]}" --resume "$work/a" --dir "$work/b8" --steps 12)"
expect_identical "resume 8 -> 4 ranks (mesh 2x2, per_param)" \
  "$("$train" "${small[@]}" --resume "$work/a" --dir "$work/b4" --world 4 --ep 2 --layout per_param --steps 12)"

if [ -n "$mpiexec" ]; then
  mpi=("$mpiexec" --allow-run-as-root --oversubscribe)
  "${mpi[@]}" -np 8 "$train" "${small[@]}" --backend mpi --dir "$work/m" --steps 8 >/dev/null
  expect_identical "mpirun -np 8 -> -np 4" \
    "$("${mpi[@]}" -np 4 "$train" "${small[@]}" --backend mpi --resume "$work/m" --dir "$work/m4" --world 4 --ep 2 --steps 12)"
fi

# SIGTERM in the middle of a long run: exit 0, the newest checkpoint verifies and resumes.
"$train" --hidden 128 --experts 4 --layers 2 --checkpoint-every 2 --steps 100000 --dir "$work/t" >"$work/t.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do  # until a checkpoint has committed
  if ls "$work/t" 2>/dev/null | grep -q '^step-[0-9]*$'; then break; fi
  sleep 0.1
done
sleep 0.5
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
if [ "$status" -ne 0 ] || ! grep -q "stopped by SIGTERM" "$work/t.log"; then
  echo "FAILED: SIGTERM exit status $status"; cat "$work/t.log"; exit 1
fi
newest="$(ls -d "$work"/t/step-* | grep -v '\.tmp-' | sort | tail -1)"
"$cli" verify "$newest" >/dev/null || { echo "FAILED: $newest does not verify after SIGTERM"; exit 1; }
step=$((10#${newest##*step-}))
expect_identical "SIGTERM at step >= $step, then resume" \
  "$("$train" --hidden 128 --experts 4 --layers 2 --checkpoint-every 2 --resume "$work/t" --dir "$work/t2" --steps $((step + 2)))"
echo "all resume checks passed"
