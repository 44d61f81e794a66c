#!/usr/bin/env bash
# Checkpoints across processes: the seed saved under mpirun -np 8 (one process per rank,
# the mpi backend) verifies, equals a save on 8 local ranks byte for byte, and loads
# under mpirun -np 4 (a 4-rank spec, mpi backend; also with replicated chunks read once
# per group and passed on over MPI) and on 8 local ranks (one process),
# every element checked against its known value.
# usage: checkpoint_mpi_test.sh COROCKPT MPIEXEC PYTHON3 SEED_SPEC
set -euo pipefail
corockpt="$1" mpiexec="$2" python="$3" spec="$4"
here=$(cd "$(dirname "$0")" && pwd)

if ! "$python" -c 'import json' >/dev/null 2>&1; then
  echo "skipped: no python3 ($python) to derive the 4-rank spec"
  exit 77
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ckpt="$work/ckpt"
failures=0
fail() {
  echo "FAILED: $*"
  failures=$((failures + 1))
}
show() { sed 's/^/    | /' "$1" | tail -n 30; }
mpirun=("$mpiexec" --oversubscribe --allow-run-as-root)

# 1. save under mpirun -np 8.
if "${mpirun[@]}" -np 8 "$corockpt" save --spec "$spec" --backend mpi "$ckpt" >"$work/save.log" 2>&1; then
  echo "ok: mpirun -np 8 save --backend mpi: $(grep -m1 '^saved' "$work/save.log" || echo "(no summary line)")"
else
  echo "FAILED: mpirun -np 8 save --backend mpi"
  show "$work/save.log"
  exit 1
fi
if [[ ! -f "$ckpt/corockpt.metadata.json" ]]; then
  echo "FAILED: no committed checkpoint at $ckpt"
  ls -la "$work"
  exit 1
fi
if compgen -G "$ckpt.tmp-*" >/dev/null; then fail "a temporary directory is left beside the committed checkpoint"; fi
world=$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["world_size"])' "$ckpt/corockpt.metadata.json")
[[ "$world" == 8 ]] || fail "the metadata says world_size $world, not 8"

# 2. verify in one process.
if "$corockpt" verify "$ckpt" >"$work/verify.log" 2>&1; then
  echo "ok: verify exits 0: $(tail -n 1 "$work/verify.log")"
else
  fail "verify of the mpi-saved checkpoint"; show "$work/verify.log"
fi

# 2b. the same data files, byte for byte, and the same metadata as a save on 8 local
# ranks in one process (the header and the indexes carry each save's own id, so they
# are compared as what they say: inspect --json).
"$corockpt" save --spec "$spec" "$work/local" >"$work/savelocal.log" 2>&1 || { fail "save on 8 local ranks"; show "$work/savelocal.log"; }
if [[ -d "$work/local" ]]; then
  if diff -r -q -x '*-index.bin' -x corockpt.index.bin -x corockpt.metadata.json "$work/local" "$ckpt" >"$work/diff.log" 2>&1 &&
    "$corockpt" inspect --json "$work/local" >"$work/local.json" && "$corockpt" inspect --json "$ckpt" >"$work/mpi.json" &&
    diff -q "$work/local.json" "$work/mpi.json" >>"$work/diff.log" 2>&1; then
    echo "ok: the mpi-saved checkpoint equals a local save: data files byte for byte, the same metadata ($(find "$ckpt" -type f | wc -l) files)"
  else
    fail "the mpi-saved checkpoint differs from the local save"; show "$work/diff.log"
  fi
fi

# 3. load --check under mpirun -np 4 with a 4-rank spec (meshes [4] and dp_ep [2, 2]).
spec4="$work/spec4.json"
"$python" "$here/derive_spec.py" "$spec" "$spec4" --world 4 --mesh2d 2,2
if "${mpirun[@]}" -np 4 "$corockpt" load --spec "$spec4" --backend mpi "$ckpt" --check >"$work/load4.log" 2>&1; then
  checked=$(grep -c '^checked .* all equal their known values' "$work/load4.log" || true)
  if [[ "$checked" == 4 ]]; then
    total=$(awk '/^checked/ {s += $2} END {print s}' "$work/load4.log")
    echo "ok: mpirun -np 4 load --check --backend mpi (4-rank spec): 4 ranks checked $total elements"
  else
    fail "mpirun -np 4 load --check: $checked of 4 ranks reported a check"; show "$work/load4.log"
  fi
else
  fail "mpirun -np 4 load --check --backend mpi"; show "$work/load4.log"
fi

# 3b. the same with replicated chunks read once per group of replicas, passed on over MPI.
if "${mpirun[@]}" -np 4 "$corockpt" load --spec "$spec4" --backend mpi "$ckpt" --check --replicas-once \
    >"$work/load4-once.log" 2>&1; then
  checked=$(grep -c '^checked .* all equal their known values' "$work/load4-once.log" || true)
  if [[ "$checked" == 4 ]]; then
    echo "ok: mpirun -np 4 load --check --replicas-once --backend mpi: 4 ranks checked their elements"
  else
    fail "mpirun -np 4 load --check --replicas-once: $checked of 4 ranks reported a check"; show "$work/load4-once.log"
  fi
else
  fail "mpirun -np 4 load --check --replicas-once --backend mpi"; show "$work/load4-once.log"
fi

# 4. load --check on 8 local ranks (one process).
if "$corockpt" load --spec "$spec" "$ckpt" --check >"$work/load8.log" 2>&1; then
  echo "ok: load --check on 8 local ranks: $(grep '^checked' "$work/load8.log")"
else
  fail "load --check on 8 local ranks"; show "$work/load8.log"
fi

if ((failures)); then
  echo "$failures check(s) FAILED"
  exit 1
fi
echo "all checks passed"
