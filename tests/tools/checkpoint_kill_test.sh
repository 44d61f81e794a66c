#!/usr/bin/env bash
# Crash consistency of a real `corockpt save`: checkpoint A is committed; then, at
# least 20 times, a save of a bigger checkpoint B into the same parent directory is
# killed with SIGKILL at a random moment. After every kill:
# - A still passes `load --check` and `verify`;
# - B is absent, or committed (the kill came after the commit) and verifies clean
#   (then it is removed for the next round);
# - every leftover `B.tmp-*` is reported as partial by verify (non-zero exit) and
#   refused by load (non-zero exit, calling it partial), then removed.
#
# `corockpt save` first builds the model and fills it with known values (most of its
# time), then writes and commits. So that the kills land where the commit protocol
# matters, 3 rounds in 4 wait until B.tmp-* appears and then kill within 1.1 x the
# write-and-commit time an uninterrupted save took (some land after the commit); the
# 4th kills at a random moment from the start. A save that finishes before its kill
# resets the window to its own duration (the machine's load changes it). How many kills land before and after the
# commit is timing, so it is reported, not asserted.
# usage: checkpoint_kill_test.sh COROCKPT SEED_SPEC [MIN_KILLS] [ROWS]
# ROWS (default 512) sizes B's big params: a slow (sanitizer) build passes fewer.
set -euo pipefail
corockpt="$1" spec="$2" min_kills="${3:-20}" rows="${4:-512}"

work=$(mktemp -d)
pid=""
cleanup() {
  if [[ -n "$pid" ]]; then
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
parent="$work/checkpoints"
A="$parent/A" B="$parent/B"
failures=0
fail() {
  echo "FAILED: $*"
  failures=$((failures + 1))
}
show() { sed 's/^/    | /' "$1" | tail -n 20; }
if [[ -n "${EPOCHREALTIME:-}" ]]; then
  now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
else
  now_ms() { date +%s%3N; }
fi
# wait_alive_ms PID MS: sleeps up to MS ms, less if PID ends first; prints the ms slept.
wait_alive_ms() {
  local from until t
  from=$(now_ms)
  until=$((from + $2))
  t=$from
  while ((t < until)) && kill -0 "$1" 2>/dev/null; do
    sleep 0.005
    t=$(now_ms)
  done
  echo $((t - from))
}
has_partial() { compgen -G "$B.tmp-*" >/dev/null; }

# B: 8 ranks, 3 params of about [ROWS, 1024] float64 with Adam: at ROWS 512, 3 x 3 x
# 4 MiB = 36 MiB of data in ~22 files; a flat and a per_param unit, a buffer, uneven
# shapes, and a small expert unit on the 2-D mesh. float64 and short names because
# filling the model with known values costs per element.
big="$work/big.json"
cat >"$big" <<EOF
{
  "world_size": 8,
  "meshes": {
    "global": {"shape": [8], "dim_names": ["fsdp"]},
    "dp_ep":  {"shape": [2, 4], "dim_names": ["dp", "ep"]}
  },
  "units": [
    {"name": "root",    "prefix": "",   "mesh": "global", "layout": "flat"},
    {"name": "blocks",  "prefix": "b.", "mesh": "global", "layout": "per_param"},
    {"name": "experts", "prefix": "e.{expert}.", "mesh": "dp_ep",
     "shard_dim": "dp", "expert_dim": "ep", "num_experts": 4, "layout": "flat"}
  ],
  "params": [
    {"unit": "root",    "name": "emb",  "shape": [$rows, 1024], "dtype": "float64"},
    {"unit": "root",    "name": "bias", "shape": [1000], "dtype": "float64"},
    {"unit": "blocks",  "name": "0",    "shape": [$rows, 1024], "dtype": "float64"},
    {"unit": "blocks",  "name": "1",    "shape": [$((rows - 1)), 1024], "dtype": "float64"},
    {"unit": "blocks",  "name": "mask", "shape": [64], "dtype": "float64", "buffer": true},
    {"unit": "experts", "name": "w",    "shape": [64, 64], "dtype": "float64"}
  ],
  "optimizer": {"type": "adam", "lr": 0.1}
}
EOF

# A: the seed, committed.
mkdir -p "$parent"
if ! "$corockpt" save --spec "$spec" "$A" >"$work/saveA.log" 2>&1; then
  echo "FAILED: saving checkpoint A"; show "$work/saveA.log"; exit 1
fi
echo "ok: checkpoint A (the seed) committed: $(tail -n 1 "$work/saveA.log")"

# One uninterrupted save of B: it must work; its phases set the kill windows.
t0=$(now_ms)
"$corockpt" save --spec "$big" "$B" >"$work/saveB.log" 2>&1 &
pid=$!
dir_ms=""
while kill -0 "$pid" 2>/dev/null; do
  if [[ -z "$dir_ms" ]] && has_partial; then dir_ms=$(($(now_ms) - t0)); fi
  sleep 0.005
done
rc=0
wait "$pid" || rc=$?
pid=""
end_ms=$(($(now_ms) - t0))
if ((rc != 0)); then
  echo "FAILED: an uninterrupted save of B exited $rc"; show "$work/saveB.log"; exit 1
fi
dir_ms=${dir_ms:-$end_ms}
if ! "$corockpt" verify "$B" >"$work/verifyB.log" 2>&1; then
  echo "FAILED: verify of an uninterrupted B"; show "$work/verifyB.log"; exit 1
fi
if ! "$corockpt" load --spec "$big" "$B" --check >"$work/loadB.log" 2>&1; then
  echo "FAILED: load --check of an uninterrupted B"; show "$work/loadB.log"; exit 1
fi
rm -rf "$B"
write_ms=$((end_ms - dir_ms))
late_window_ms=$((write_ms * 11 / 10))
# A floor of 20 ms: the write phase of this 36 MiB save is tens of ms once its model is
# filled (corockpt save fills before the save starts), so a wider window mostly lands late.
((late_window_ms < 20)) && late_window_ms=20
early_window_ms=$((dir_ms > 100 ? dir_ms : 100))
echo "ok: an uninterrupted save of B: $(tail -n 1 "$work/saveB.log"); B.tmp-* appeared after ${dir_ms} ms," \
  "the process ended after ${end_ms} ms; B verifies and passes load --check"
echo "    kill windows: ${late_window_ms} ms after B.tmp-* appears (3 rounds in 4), ${early_window_ms} ms from the start"

check_A() {
  local round="$1"
  if ! "$corockpt" load --spec "$spec" "$A" --check >"$work/loadA.log" 2>&1; then
    fail "round $round: A no longer passes load --check"; show "$work/loadA.log"
  fi
  if ! "$corockpt" verify "$A" >"$work/verifyA.log" 2>&1; then
    fail "round $round: A no longer verifies"; show "$work/verifyA.log"
  fi
}

kills=0 rounds=0
before_dir=0     # killed before B.tmp-* appeared: nothing left
before_commit=0  # killed during the save: a partial B.tmp-* left
after_commit=0   # killed after the commit: B committed
finished=0       # the save finished before the kill was sent
partials_checked=0
start=$(now_ms)
deadline_ms=200000  # a safety net; 20 kills take about a minute
while ((kills < min_kills)); do
  if ((rounds >= 3 * min_kills || $(now_ms) - start > deadline_ms)); then
    fail "only $kills kills landed in $rounds rounds ($((($(now_ms) - start) / 1000)) s)"
    break
  fi
  rounds=$((rounds + 1))
  "$corockpt" save --spec "$big" "$B" >"$work/save.log" 2>&1 &
  pid=$!
  if ((rounds % 4 == 0)); then
    delay_ms=$((RANDOM % early_window_ms))
    when="${delay_ms} ms after the start"
  else
    while kill -0 "$pid" 2>/dev/null && ! has_partial; do sleep 0.005; done
    delay_ms=$((RANDOM % late_window_ms))
    when="${delay_ms} ms after B.tmp-* appeared"
  fi
  slept_ms=$(wait_alive_ms "$pid" "$delay_ms")
  kill -9 "$pid" 2>/dev/null || true
  rc=0
  wait "$pid" 2>/dev/null || rc=$?
  pid=""

  partial=()
  for d in "$B".tmp-*; do [[ -e "$d" ]] && partial+=("$d"); done
  committed=0
  if [[ -e "$B" ]]; then
    if [[ -f "$B/corockpt.metadata.json" ]]; then
      committed=1
    else
      fail "round $rounds: $B exists without its metadata (a save became visible before its commit)"
    fi
  fi
  case "$rc" in
    137)
      kills=$((kills + 1))
      if ((committed)); then
        after_commit=$((after_commit + 1))
        outcome="killed after the commit"
      elif ((${#partial[@]})); then
        before_commit=$((before_commit + 1))
        outcome="killed before the commit, partial left"
      else
        before_dir=$((before_dir + 1))
        outcome="killed before any directory"
      fi
      ;;
    0)
      finished=$((finished + 1))
      outcome="finished before the kill (after ${slept_ms} ms)"
      # Saves vary with the machine's load: aim the next kills at this one's duration.
      if ((rounds % 4 != 0)); then
        late_window_ms=$((slept_ms * 11 / 10))
        ((late_window_ms < 20)) && late_window_ms=20
        outcome+="; kill window now ${late_window_ms} ms"
      fi
      ((committed)) || fail "round $rounds: save exited 0 but $B is not committed"
      ;;
    *)
      fail "round $rounds: save exited $rc on its own"; show "$work/save.log"
      outcome="failed"
      ;;
  esac
  if ((committed)) && ((${#partial[@]})); then
    fail "round $rounds: both a committed B and a partial ${partial[*]}"
  fi
  echo "round $rounds: kill ${when}: $outcome"

  check_A "$rounds"
  if ((committed)); then
    if "$corockpt" verify "$B" >"$work/verifyB.log" 2>&1; then
      echo "  ok: committed B verifies clean"
    else
      fail "round $rounds: committed B does not verify"; show "$work/verifyB.log"
    fi
    rm -rf "$B"
  fi
  for d in "${partial[@]}"; do
    rcv=0
    "$corockpt" verify "$d" >"$work/verifyP.log" 2>&1 || rcv=$?
    if ((rcv == 0)); then
      fail "round $rounds: verify exits 0 on the partial $d"; show "$work/verifyP.log"
    elif ! grep -qi partial "$work/verifyP.log"; then
      fail "round $rounds: verify fails on $d but does not call it partial"; show "$work/verifyP.log"
    fi
    # B's own spec for the first partial; the (cheap to build) seed's for the others:
    # the refusal is about the directory, before any tensor is matched.
    load_spec="$spec"
    ((partials_checked == 0)) && load_spec="$big"
    rcl=0
    "$corockpt" load --spec "$load_spec" "$d" >"$work/loadP.log" 2>&1 || rcl=$?
    if ((rcl == 0)); then
      fail "round $rounds: load accepts the partial $d"; show "$work/loadP.log"
    elif ! grep -qi partial "$work/loadP.log"; then
      fail "round $rounds: load fails on $d but not because it is partial"; show "$work/loadP.log"
    fi
    if ((rcv != 0 && rcl != 0)); then
      echo "  ok: partial $(basename "$d") ($(find "$d" -type f | wc -l) files):" \
        "verify exit $rcv ($(grep -m1 -i partial "$work/verifyP.log" | sed 's/^.*: a partial/a partial/' | cut -c1-60)), load exit $rcl"
    fi
    partials_checked=$((partials_checked + 1))
    rm -rf "$d"
  done
done

echo "summary: $rounds rounds in $((($(now_ms) - start) / 1000)) s; $kills SIGKILLs landed:" \
  "$((before_dir + before_commit)) before the commit ($before_dir before any directory," \
  "$before_commit leaving a partial B.tmp-*), $after_commit after the commit;" \
  "$finished saves finished before the kill; $partials_checked partial directories checked;" \
  "A passed load --check and verify $rounds times"
if ((failures)); then
  echo "$failures check(s) FAILED"
  exit 1
fi
echo "all checks passed"
