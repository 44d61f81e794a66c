#!/usr/bin/env bash
# `corockpt statedict` on the seed under mpirun -np 8 (one process per rank, the mpi
# backend) describes exactly what the in-process backend describes: layouts and, through
# each entry's CRC-32C of its values (known values, a function of name and index), the
# values each rank holds, so a gather that puts a shard in the wrong place fails.
# usage: statedict_mpi_test.sh CORROCKPT_BINARY MPIEXEC SPEC
set -euo pipefail
corockpt="$1" mpiexec="$2" spec="$3"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for flags in "" "--full" "--full --cpu-offload --experts-to-rank0"; do
  # shellcheck disable=SC2086
  "$corockpt" statedict --spec "$spec" $flags --out "$out/local.json"
  # shellcheck disable=SC2086
  "$mpiexec" --oversubscribe --allow-run-as-root -np 8 \
    "$corockpt" statedict --spec "$spec" --backend mpi $flags --out "$out/mpi.json"
  # Values are compared only if they are described: every entry must carry its digest.
  entries=$(grep -c '"dtype"' "$out/local.json" || true)
  digests=$(grep -c '"crc32c": "[0-9a-f]\{8\}"' "$out/local.json" || true)
  if [ "$entries" = 0 ] || [ "$entries" != "$digests" ]; then
    echo "FAILED: statedict $flags: $digests value digests for $entries entries"
    exit 1
  fi
  if ! cmp -s "$out/local.json" "$out/mpi.json"; then
    echo "FAILED: statedict $flags differs between the local and the mpi backends"
    diff <(head -c 2000 "$out/local.json") <(head -c 2000 "$out/mpi.json") || true
    exit 1
  fi
  echo "ok: statedict $flags: mpi -np 8 == local ($entries entries, values included)"
done
