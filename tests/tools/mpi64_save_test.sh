#!/usr/bin/env bash
# The real exchange at 64 MPI processes on this host (oversubscribed, each process with a
# 1 MiB staging pool of 4 buffers, smaller than its data), issue 18:
#   1. `mpirun -np 64 corockpt save` of a small MoE (fsdp 64, dp x ep = 16 x 4) commits,
#      verifies, and loads with --check on 8 local ranks (another world size);
#   2. one rank never sends its plan (COROCKPT_TEST_STOP_BEFORE_PLAN: it stops its own
#      process with SIGSTOP once its data is written): every other rank exits non-zero
#      within the deadline plus a margin, naming the timeout, and nothing is committed
#      (no checkpoint directory; leftovers only as DIR.tmp-*).
# Case 2 runs under mpirun --enable-recovery, so that the first rank to fail does not end
# the job: each rank records its own exit status and time (mpirun reports only one).
# Every mpirun runs under `timeout`; the stopped process is killed by its pid.
# usage: mpi64_save_test.sh COROCKPT MPIEXEC   (MPIEXEC empty: skipped)
set -euo pipefail
corockpt="$1" mpiexec="${2:-}"

if [[ -z "$mpiexec" ]] || ! command -v "$mpiexec" >/dev/null 2>&1; then
  echo "skipped: no mpirun (corockpt built without MPI, or MPIEXEC '$mpiexec' not found)"
  exit 77
fi

work=$(mktemp -d)
launcher="" stopped=""
cleanup() {
  if [[ -n "$stopped" ]]; then kill -KILL "$stopped" 2>/dev/null || true; fi
  if [[ -n "$launcher" ]]; then kill -TERM "$launcher" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
failures=0
fail() {
  echo "FAILED: $*"
  failures=$((failures + 1))
}
show() { sed 's/^/    | /' "$1" | tail -n 20; }
now() { date +%s.%N; }
world=64
staging=(--staging-mib 1)
bound=120  # seconds an mpirun may take before it counts as hung

# Per rank about 1.9 MiB of params and Adam moments (120 MiB in all): more than its pool.
spec="$work/spec64.json"
cat >"$spec" <<'EOF'
{
  "world_size": 64,
  "meshes": {
    "global": {"shape": [64], "dim_names": ["fsdp"]},
    "dp_ep":  {"shape": [16, 4], "dim_names": ["dp", "ep"]}
  },
  "units": [
    {"name": "root",    "prefix": "", "mesh": "global", "layout": "flat"},
    {"name": "experts", "prefix": "layers.0.experts.{expert}.", "mesh": "dp_ep",
     "shard_dim": "dp", "expert_dim": "ep", "num_experts": 8, "layout": "flat"}
  ],
  "params": [
    {"unit": "root",    "name": "embed.weight", "shape": [2048, 1024]},
    {"unit": "root",    "name": "norm.weight",  "shape": [1024]},
    {"unit": "experts", "name": "w1.weight",    "shape": [1024, 512]},
    {"unit": "experts", "name": "w2.weight",    "shape": [512, 1024]}
  ],
  "optimizer": {"type": "adam", "lr": 0.1, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
}
EOF
spec8="$work/spec8.json"
sed 's/"world_size": 64/"world_size": 8/; s/"shape": \[64\]/"shape": [8]/; s/"shape": \[16, 4\]/"shape": [2, 4]/' \
  "$spec" >"$spec8"

# 1. A save at 64 processes commits, verifies and loads on 8 ranks.
ckpt="$work/ckpt"
started=$SECONDS
if timeout "$bound" "$mpiexec" --oversubscribe --allow-run-as-root -np "$world" \
    "$corockpt" save --spec "$spec" --backend mpi "${staging[@]}" "$ckpt" >"$work/save.log" 2>&1; then
  echo "ok: mpirun -np $world save in $((SECONDS - started)) s: $(grep -m1 '^saved' "$work/save.log" || echo '(no summary)')"
else
  fail "mpirun -np $world save exited non-zero (124: hung past ${bound}s)"; show "$work/save.log"
fi
if [[ -f "$ckpt/corockpt.metadata.json" ]]; then
  grep -q '"world_size": *64' "$ckpt/corockpt.metadata.json" || fail "the metadata does not say world_size 64"
  data_files=$(compgen -G "$ckpt/rank*-*.safetensors" || true)
  files=$(wc -l <<<"$data_files")
  ranks_with_files=$(grep -o 'rank[0-9]*-' <<<"$data_files" | sort -u | wc -l)
  [[ "$ranks_with_files" == "$world" ]] || fail "data files from $ranks_with_files ranks, not $world"
  ! compgen -G "$ckpt.tmp-*" >/dev/null || fail "a temporary directory is left beside the committed checkpoint"
  if "$corockpt" verify "$ckpt" >"$work/verify.log" 2>&1; then
    echo "ok: verify: $(tail -n 1 "$work/verify.log") ($files data files)"
  else
    fail "verify of the 64-process checkpoint"; show "$work/verify.log"
  fi
  if "$corockpt" load --spec "$spec8" "${staging[@]}" "$ckpt" --check >"$work/load8.log" 2>&1 &&
      grep -q '^checked .* all equal their known values' "$work/load8.log"; then
    echo "ok: load --check on 8 local ranks: $(grep -m1 '^checked' "$work/load8.log")"
  else
    fail "load --check on 8 local ranks"; show "$work/load8.log"
  fi
else
  fail "no committed checkpoint at $ckpt"
fi

# 2. Rank 37 stops itself before it sends its plan; the others must give up in time.
victim=37 deadline=10 margin=20
ckpt2="$work/ckpt2"
status_dir="$work/status"
mkdir -p "$status_dir"
wrapper="$work/rank.sh"
cat >"$wrapper" <<'EOF'
#!/bin/sh
"$@" 2>"$RANK_STATUS_DIR/err.$OMPI_COMM_WORLD_RANK"
status=$?
echo "$status $(date +%s.%N)" >"$RANK_STATUS_DIR/status.$OMPI_COMM_WORLD_RANK"
exit "$status"
EOF
chmod +x "$wrapper"
launched=$(now)
RANK_STATUS_DIR="$status_dir" COROCKPT_TEST_STOP_BEFORE_PLAN="$victim" \
  timeout "$bound" "$mpiexec" --oversubscribe --allow-run-as-root --enable-recovery \
  -x RANK_STATUS_DIR -x COROCKPT_TEST_STOP_BEFORE_PLAN -np "$world" \
  "$wrapper" "$corockpt" save --spec "$spec" --backend mpi "${staging[@]}" --deadline "$deadline" "$ckpt2" \
  >"$work/stall.log" 2>&1 &
launcher=$!

# The victim's pid, once its process is stopped (state T), polled for up to `bound` s.
stopped_at=""
for ((tries = 0; tries < bound * 10; ++tries)); do
  for pid in $(pgrep -x corockpt || true); do
    env=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null || true)
    grep -qx "OMPI_COMM_WORLD_RANK=$victim" <<<"$env" || continue
    grep -qx "RANK_STATUS_DIR=$status_dir" <<<"$env" || continue
    if [[ "$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" == T ]]; then
      stopped="$pid"
      stopped_at=$(now)
    fi
  done
  [[ -n "$stopped" ]] && break
  kill -0 "$launcher" 2>/dev/null || break
  sleep 0.1
done

if [[ -z "$stopped" ]]; then
  fail "rank $victim was never seen stopped before its plan"; show "$work/stall.log"
else
  echo "ok: rank $victim (pid $stopped) stopped itself before sending its plan, $(awk -v a="$launched" -v b="$stopped_at" 'BEGIN {printf "%.1f", b - a}') s after the launch"
  # Every other rank records its status; then the stopped one goes.
  for ((tries = 0; tries < bound * 10; ++tries)); do
    recorded=$({ compgen -G "$status_dir/status.*" || true; } | wc -l)
    ((recorded >= world - 1)) && break
    kill -0 "$launcher" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$stopped" 2>/dev/null || true
fi
wait "$launcher" || true
launcher=""
stopped=""

if [[ -n "$stopped_at" ]]; then
  late=0 zero=0 missing=0 unnamed=0 slowest=0
  for ((r = 0; r < world; ++r)); do
    ((r == victim)) && continue
    if [[ ! -f "$status_dir/status.$r" ]]; then
      missing=$((missing + 1)); continue
    fi
    read -r status ended <"$status_dir/status.$r"
    took=$(awk -v a="$stopped_at" -v b="$ended" 'BEGIN {printf "%.1f", b - a}')
    slowest=$(awk -v s="$slowest" -v t="$took" 'BEGIN {print (t > s ? t : s)}')
    [[ "$status" != 0 ]] || zero=$((zero + 1))
    awk -v t="$took" -v l=$((deadline + margin)) 'BEGIN {exit !(t > l)}' && late=$((late + 1))
    grep -q "did not finish within $((deadline * 1000)) ms" "$status_dir/err.$r" || {
      unnamed=$((unnamed + 1))
      ((unnamed > 1)) || { echo "  rank $r said:"; show "$status_dir/err.$r"; }
    }
  done
  ((missing == 0)) || fail "$missing rank(s) recorded no exit status (hung, killed at ${bound}s?)"
  ((zero == 0)) || fail "$zero rank(s) exited 0 although rank $victim never sent its plan"
  ((late == 0)) || fail "$late rank(s) exited more than $((deadline + margin)) s after rank $victim stopped"
  ((unnamed == 0)) || fail "$unnamed rank(s) did not name the timeout"
  grep -q "nothing was committed" "$status_dir/err.0" || { fail "rank 0 does not say nothing was committed"; show "$status_dir/err.0"; }
  if ((missing + zero + late + unnamed == 0)); then
    echo "ok: the $((world - 1)) other ranks exited non-zero within ${slowest} s of the stop (deadline ${deadline} s), naming the timeout"
    echo "    rank 0: $(cat "$status_dir/err.0")"
    echo "    rank 1: $(cat "$status_dir/err.1")"
  fi
fi
[[ ! -e "$ckpt2" ]] || fail "a checkpoint was committed at $ckpt2 although rank $victim never sent its plan"
leftovers=$(find "$work" -maxdepth 1 -name 'ckpt2*' ! -name 'ckpt2.tmp-*' | wc -l)
((leftovers == 0)) || fail "something other than ckpt2.tmp-* was left: $(find "$work" -maxdepth 1 -name 'ckpt2*')"

if ((failures > 0)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "all 64-process cases passed"
