#!/usr/bin/env bash
# A peer that dies under a launcher that does not end the job (mpirun --enable-recovery)
# must not hang the survivors: every wait is bounded by --deadline, the survivor exits
# non-zero naming the dead rank where it can, and nothing is committed.
#   1. a process of the job never initializes MPI (it exits first): the survivor's
#      MPI_Init_thread is abandoned at the deadline;
#   2. rank 1 is SIGKILLed in the middle of a save, while it writes its data;
#   3. rank 1 is SIGKILLed in the middle of a load.
# Each mpirun runs under `timeout`, so a hang fails the test instead of blocking CI.
# usage: peer_death_mpi_test.sh COROCKPT MPIEXEC
set -euo pipefail
corockpt="$1" mpiexec="$2"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() {
  echo "FAILED: $*"
  failures=$((failures + 1))
}
show() { sed 's/^/    | /' "$1" | tail -n 20; }
deadline=10  # long enough that rank 1 is killed (while building under ASan) before rank 0 gives up
bound=90  # seconds an mpirun may take before it counts as hung

# Two ranks, 576 MiB each with Adam: big enough that a rank can be caught mid-job.
spec="$work/spec.json"
cat >"$spec" <<'EOF'
{
  "world_size": 2,
  "meshes": {"global": {"shape": [2], "dim_names": ["fsdp"]}},
  "units": [{"name": "root", "prefix": "", "mesh": "global", "layout": "flat"}],
  "params": [
    {"unit": "root", "name": "a.weight", "shape": [4096, 8192]},
    {"unit": "root", "name": "b.weight", "shape": [4096, 8192]},
    {"unit": "root", "name": "c.weight", "shape": [4096, 8192]}
  ],
  "optimizer": {"type": "adam", "lr": 0.1, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
}
EOF

# Each rank records its own exit status: mpirun --enable-recovery exits 0 regardless.
wrapper="$work/rank.sh"
cat >"$wrapper" <<'EOF'
#!/bin/sh
"$@"
status=$?
echo "$status" >"$RANK_STATUS_DIR/status.$OMPI_COMM_WORLD_RANK"
exit "$status"
EOF
chmod +x "$wrapper"
export RANK_STATUS_DIR="$work"
mpirun=("$mpiexec" --oversubscribe --allow-run-as-root --enable-recovery -x RANK_STATUS_DIR)

# The pid of rank 1's corockpt process once its resident memory passes 400 MB, which it
# reaches only while building its model, after MPI has started; empty if it never does.
rank1_busy() {
  local tries=0
  while ((tries < 3000)); do
    for pid in $(pgrep -x corockpt || true); do
      tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1' || continue
      grep -q "RANK_STATUS_DIR=$work" <(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null) || continue
      local rss
      rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
      if ((${rss:-0} > 400000)); then
        echo "$pid"
        return
      fi
    done
    sleep 0.01
    tries=$((tries + 1))
  done
}

# Waits (up to 30 s) until a file matching the glob exists.
wait_for_file() {
  local tries=0
  while ((tries < 3000)); do
    compgen -G "$1" >/dev/null && return 0
    sleep 0.01
    tries=$((tries + 1))
  done
  return 1
}

# Checks rank 0's outcome: non-zero, in time, with `expect` in its error.
check_survivor() {  # label log started expect
  local label="$1" log="$2" started="$3" expect="$4"
  local took=$((SECONDS - started))
  local status
  status=$(cat "$work/status.0" 2>/dev/null || echo "none")
  if [[ "$status" == none ]]; then
    fail "$label: rank 0 recorded no exit status (hung, killed at ${bound}s?)"; show "$log"
  elif [[ "$status" == 0 ]]; then
    fail "$label: rank 0 exited 0 although its peer died"; show "$log"
  elif ! grep -q -- "$expect" "$log"; then
    fail "$label: rank 0's error does not say '$expect'"; show "$log"
  else
    echo "ok: $label: rank 0 exited $status after ${took}s: $(grep -m1 'corockpt' "$log")"
  fi
}

# 1. A process of the job exits before initializing MPI.
rm -f "$work"/status.*
started=$SECONDS
timeout "$bound" "${mpirun[@]}" -np 1 "$wrapper" "$corockpt" save --spec "$spec" --backend mpi \
  --deadline "$deadline" "$work/ckpt1" : -np 1 /bin/false >"$work/init.log" 2>&1 || true
check_survivor "a peer that never starts MPI" "$work/init.log" "$started" "MPI_Init_thread did not finish"
[[ ! -e "$work/ckpt1" ]] || fail "a checkpoint was committed at $work/ckpt1"

# Runs `corockpt COMMAND ... --backend mpi` on 2 ranks, SIGKILLs rank 1 once it builds its
# model (and, with a glob, once a file matching it exists), and checks rank 0.
kill_rank1_during() {  # label log wait-glob-or-empty corockpt-args...
  local label="$1" log="$2" glob="$3"
  shift 3
  rm -f "$work"/status.*
  local started=$SECONDS
  timeout "$bound" "${mpirun[@]}" -np 2 "$wrapper" "$corockpt" "$@" --backend mpi --deadline "$deadline" \
    >"$log" 2>&1 &
  local launcher=$!
  local victim
  victim=$(rank1_busy)
  if [[ -n "$victim" ]] && { [[ -z "$glob" ]] || wait_for_file "$glob"; }; then
    kill -9 "$victim" 2>/dev/null || true
  else
    victim=""
  fi
  wait "$launcher" || true
  if [[ -z "$victim" ]]; then
    fail "$label: rank 1 was never seen at the point to kill it"; show "$log"
  else
    check_survivor "$label" "$log" "$started" "world rank 1 (pid $victim, this host) has exited"
  fi
}

# 2. Rank 1 dies in the middle of a save: killed once it has begun writing its data file.
kill_rank1_during "rank 1 killed during a save" "$work/save.log" "$work/ckpt2.tmp-*/rank00001-*.safetensors" \
  save --spec "$spec" "$work/ckpt2"
[[ ! -e "$work/ckpt2" ]] || fail "a checkpoint was committed at $work/ckpt2 although rank 1 died"

# 3. Rank 1 dies in the middle of a load (of a checkpoint saved on two local ranks).
"$corockpt" save --spec "$spec" "$work/saved" >"$work/saved.log" 2>&1 || { fail "the local save for the load"; show "$work/saved.log"; }
kill_rank1_during "rank 1 killed during a load" "$work/load.log" "" load --spec "$spec" "$work/saved"

if ((failures > 0)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "all peer-death cases passed"
