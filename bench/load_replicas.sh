#!/usr/bin/env bash
# Replicated chunks read by every replica, or once per group of replicas and passed on
# over the communicator (`corockpt load --replicas-once`, LoadOptions::replicas), on the
# HSDP spec (examples/specs/hsdp.json: mesh [2 replicate, 4 shard], 8 ranks, ~1.1 GiB
# saved with Adam, so every rank's shard has one replica).
#
# It saves the spec once, then alternates loads without and with --replicas-once for
# ROUNDS rounds, on 8 in-process ranks (the local backend) and, when mpirun is found,
# under mpirun -np 8 (the mpi backend). Each load prints the slowest rank's
# load_checkpoint time, clocked from a barrier after every rank built its model. Loads
# read with O_DIRECT, so the page cache plays no part. Prints the medians and, on its
# own line per backend, `replicas_once/every_<backend> = X` (time with / time without).
#
# usage: bench/load_replicas.sh COROCKPT [ROUNDS] [DIR]
#   COROCKPT: the built CLI (build/tools/corockpt); ROUNDS: 5; DIR: a scratch parent (/tmp)
set -euo pipefail
corockpt="$1" rounds="${2:-5}" parent="${3:-/tmp}"
spec="$(cd "$(dirname "$0")/.." && pwd)/examples/specs/hsdp.json"
work=$(mktemp -d "$parent/corockpt-load-replicas-XXXXXX")
trap 'rm -rf "$work"' EXIT

"$corockpt" save --spec "$spec" "$work/ckpt" | tail -1

# The slowest rank's load_checkpoint seconds of one load: `launcher...` runs the CLI,
# $backend names the backend, $once asks for --replicas-once.
load_seconds() {
  "$@" "$corockpt" load --backend "$backend" --spec "$spec" "$work/ckpt" ${once:+--replicas-once} 2>/dev/null |
    sed -n 's/.*load_checkpoint \([0-9.]*\) s on the slowest rank.*/\1/p' | sort -g | tail -1
}

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# run_backend BACKEND [LAUNCHER...]
run_backend() {
  backend="$1"
  shift
  local every=() once_times=()
  for ((i = 1; i <= rounds; i++)); do
    every+=("$(once="" load_seconds "$@")")
    once_times+=("$(once=1 load_seconds "$@")")
    echo "$backend round $i: every replica reads ${every[-1]} s, replicas read once ${once_times[-1]} s"
  done
  local a b
  a=$(printf '%s\n' "${every[@]}" | median)
  b=$(printf '%s\n' "${once_times[@]}" | median)
  echo "$backend median: every replica reads $a s, replicas read once $b s"
  awk -v a="$a" -v b="$b" -v n="$backend" 'BEGIN {printf "replicas_once/every_%s = %.2f\n", n, b / a}'
}

run_backend local
if mpirun=$(command -v mpirun); then
  run_backend mpi "$mpirun" --oversubscribe --allow-run-as-root -np 8
fi
