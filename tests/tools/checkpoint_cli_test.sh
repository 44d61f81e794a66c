#!/usr/bin/env bash
# The checkpoint subcommands end to end on the seed (8 ranks in one process):
# save; inspect lists every tensor; verify passes; load --check on 20 other
# configurations (world 8/6/4/2/1, layout flat/per_param, float32/bfloat16); a save
# onto an existing checkpoint fails; verify fails on a flipped data byte and names the
# file (and load --check fails on it), and on a stray *.safetensors file, a mesh that
# contradicts the world size and a truncated file; consolidate --optimizer-states, read
# back by an independent pure-Python safetensors reader checking every element; the same
# for a model of every dtype (tests/tools/all_dtypes_spec.json).
# usage: checkpoint_cli_test.sh COROCKPT PYTHON3 SEED_SPEC READ_SAFETENSORS_PY
# Exits 77 (skipped) only when PYTHON3 cannot run.
set -euo pipefail
corockpt="$1" python="$2" spec="$3" reader="$4"
here=$(cd "$(dirname "$0")" && pwd)
derive="$here/derive_spec.py"

if ! "$python" -c 'import json, struct' >/dev/null 2>&1; then
  echo "skipped: no python3 ($python) to derive specs and read safetensors"
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
# run_quiet LOG CMD...: runs CMD with its output in LOG; prints LOG if it fails.
run_quiet() {
  local log="$1"
  shift
  "$@" >"$log" 2>&1 && return 0
  local rc=$?
  sed 's/^/    | /' "$log" | tail -n 20
  return $rc
}

# 1. save the seed on 8 local ranks.
if run_quiet "$work/save.log" "$corockpt" save --spec "$spec" "$ckpt"; then
  echo "ok: save seed on 8 local ranks: $(tail -n 1 "$work/save.log")"
else
  echo "FAILED: save of the seed"
  exit 1
fi
[[ -f "$ckpt/corockpt.metadata.json" ]] || { echo "FAILED: no corockpt.metadata.json in $ckpt"; exit 1; }
# All of its metadata as one document (the checkpoint's own keeps the tensors in binary indexes).
"$corockpt" inspect --json "$ckpt" >"$work/meta.json" || { echo "FAILED: inspect --json"; exit 1; }
if compgen -G "$work/ckpt.tmp-*" >/dev/null; then fail "a temporary directory is left beside the committed checkpoint"; fi

# 2. inspect lists every tensor the metadata holds, and the world it was saved on.
if run_quiet "$work/inspect.log" "$corockpt" inspect "$ckpt"; then
  if "$python" - "$work/meta.json" "$work/inspect.log" <<'EOF'
import json, re, sys
meta = json.load(open(sys.argv[1]))
out = open(sys.argv[2]).read()
# name  dtype  [shape]  chunks  bytes
row = re.compile(r"^(\S+)\s+(\S+)\s+\[([0-9, ]*)\]\s+(\d+)\s+(\d+)$")
rows = {m.group(1): m for m in map(row.match, out.splitlines()) if m}
missing = [n for n in meta["tensors"] if n not in rows]
assert not missing, "inspect does not list %s" % missing[:5]
for name, record in meta["tensors"].items():
    m = rows[name]
    shape = [int(d) for d in m.group(3).split(",") if d.strip()]
    assert (m.group(2), shape, int(m.group(4))) == (record["dtype"], record["shape"], len(record["chunks"])), \
        "inspect shows %s as %s %s, %s chunks; the metadata has %s %s, %d" % (
            name, m.group(2), shape, m.group(4), record["dtype"], record["shape"], len(record["chunks"]))
assert "saved on 8 ranks" in out, "inspect does not say 'saved on 8 ranks'"
assert "%d tensors" % len(meta["tensors"]) in out, "inspect does not count %d tensors" % len(meta["tensors"])
assert any(n.startswith("state.") and n.endswith(".step") for n in meta["tensors"]), "no optimizer step saved"
print("ok: inspect lists all %d tensors (params and optimizer states) with the metadata's dtypes, shapes and chunk counts, and the 8-rank world" % len(meta["tensors"]))
EOF
  then :; else fail "inspect output"; sed 's/^/    | /' "$work/inspect.log" | head -n 20; fi
else
  fail "inspect exited non-zero"
fi

# 3. verify passes.
if run_quiet "$work/verify.log" "$corockpt" verify "$ckpt"; then
  echo "ok: verify exits 0: $(tail -n 1 "$work/verify.log")"
else
  fail "verify of a freshly saved checkpoint exited non-zero"
fi

# 4. load --check on other world sizes, meshes, layouts and dtypes.
configs=("8 2,4" "6 3,2" "4 2,2" "2 1,2" "1 1,1")
for config in "${configs[@]}"; do
  read -r world mesh2d <<<"$config"
  for layout in flat per_param; do
    for dtype in float32 bfloat16; do
      derived="$work/spec-$world-$layout-$dtype.json"
      "$python" "$derive" "$spec" "$derived" --world "$world" --mesh2d "$mesh2d" --layout "$layout" --dtype "$dtype"
      what="load --check: world $world (meshes [$world] and dp_ep [${mesh2d/,/, }]), $layout, $dtype"
      if run_quiet "$work/load.log" "$corockpt" load --spec "$derived" "$ckpt" --check; then
        echo "ok: $what: $(grep '^checked' "$work/load.log")"
      else
        fail "$what"
      fi
    done
  done
done

# 5. saving onto an existing checkpoint fails and leaves it intact.
before=$(cd "$ckpt" && ls -l --time-style=+%s.%N | md5sum)
if "$corockpt" save --spec "$spec" "$ckpt" >"$work/resave.log" 2>&1; then
  fail "save onto the existing checkpoint $ckpt exited 0"
elif ! grep -q -i exist "$work/resave.log"; then
  fail "save onto the existing checkpoint failed, but not because it exists"
  sed 's/^/    | /' "$work/resave.log" | tail -n 5
else
  echo "ok: save onto an existing checkpoint exits non-zero: $(head -n 1 "$work/resave.log")"
fi
after=$(cd "$ckpt" && ls -l --time-style=+%s.%N | md5sum)
[[ "$before" == "$after" ]] || fail "the refused save changed the existing checkpoint's files"
if compgen -G "$work/ckpt.tmp-*" >/dev/null; then fail "the refused save left a temporary directory"; fi

# 6. consolidate with optimizer states; an independent reader checks every element.
out="$work/consolidated"
if run_quiet "$work/consolidate.log" "$corockpt" consolidate "$ckpt" "$out" --optimizer-states; then
  echo "ok: consolidate --optimizer-states: $(tail -n 1 "$work/consolidate.log")"
  if "$python" "$reader" "$out" --metadata "$work/meta.json" --optimizer-states; then :; else
    fail "the consolidated safetensors files do not read back right"
  fi
else
  fail "consolidate exited non-zero"
fi
# ...and without optimizer states: the model's tensors only.
if run_quiet "$work/consolidate2.log" "$corockpt" consolidate "$ckpt" "$work/model-only"; then
  if "$python" "$reader" "$work/model-only" --metadata "$work/meta.json" >"$work/reader2.log" 2>&1; then
    echo "ok: consolidate without --optimizer-states: $(tail -n 1 "$work/reader2.log" | sed 's/^ok: //')"
  else
    fail "consolidate without optimizer states"; sed 's/^/    | /' "$work/reader2.log"
  fi
else
  fail "consolidate without --optimizer-states exited non-zero"
fi

# ...and split into files of at most 4 KiB: many files, the weight_map spread over them.
if run_quiet "$work/consolidate3.log" "$corockpt" consolidate "$ckpt" "$work/split" --optimizer-states --max-file-size 4096; then
  if "$python" "$reader" "$work/split" --metadata "$work/meta.json" --optimizer-states >"$work/reader3.log" 2>&1; then
    echo "ok: consolidate --max-file-size 4096: $(head -n 1 "$work/reader3.log" | sed 's/^ok: //')"
  else
    fail "consolidate --max-file-size 4096"; sed 's/^/    | /' "$work/reader3.log"
  fi
else
  fail "consolidate --max-file-size 4096 exited non-zero"
fi

# 6b. every dtype end to end: a per_param model of float32/bfloat16/float16/float64
# params, int64/bool/0-d buffers and int32/uint8 frozen params: save, verify, load
# --check on 8 and on 3 ranks, consolidate, read back.
dspec="$here/all_dtypes_spec.json" dckpt="$work/dtypes"
"$python" "$derive" "$dspec" "$work/dtypes3.json" --world 3
if run_quiet "$work/dsave.log" "$corockpt" save --spec "$dspec" "$dckpt" &&
  run_quiet "$work/dverify.log" "$corockpt" verify "$dckpt" &&
  run_quiet "$work/dload8.log" "$corockpt" load --spec "$dspec" "$dckpt" --check &&
  run_quiet "$work/dload3.log" "$corockpt" load --spec "$work/dtypes3.json" "$dckpt" --check &&
  run_quiet "$work/dcons.log" "$corockpt" consolidate "$dckpt" "$work/dtypes-out" --optimizer-states &&
  "$corockpt" inspect --json "$dckpt" >"$work/dmeta.json" &&
  run_quiet "$work/dread.log" "$python" "$reader" "$work/dtypes-out" --metadata "$work/dmeta.json" --optimizer-states; then
  echo "ok: every dtype: save, verify, load --check on 8 ranks ($(grep -o 'checked [0-9]* elements' "$work/dload8.log"))" \
    "and on 3 ($(grep -o 'checked [0-9]* elements' "$work/dload3.log")), consolidate, read back: $(sed -n 2p "$work/dread.log" | sed 's/^ok: //')"
else
  fail "the every-dtype checkpoint (see the output above)"
fi

# 7. a flipped byte in a data file: verify fails naming the file; load --check fails.
bad="$work/corrupt"
cp -r "$ckpt" "$bad"
victim=$("$python" - "$bad" "$work/meta.json" <<'EOF'
import json, os, struct, sys
d = sys.argv[1]
meta = json.load(open(sys.argv[2]))
# the largest data file; flip a byte in the middle of its tensor data
name = max(meta["files"], key=lambda f: (meta["files"][f], f))
path = os.path.join(d, name)
with open(path, "r+b") as f:
    (header_len,) = struct.unpack("<Q", f.read(8))
    size = os.path.getsize(path)
    at = 8 + header_len + (size - 8 - header_len) // 2
    f.seek(at)
    b = f.read(1)
    f.seek(at)
    f.write(bytes([b[0] ^ 0x5A]))
print(name, at)
EOF
)
read -r victim_file victim_at <<<"$victim"
if "$corockpt" verify "$bad" >"$work/verify-bad.log" 2>&1; then
  fail "verify exited 0 after byte $victim_at of $victim_file was flipped"
elif grep -q -- "$victim_file" "$work/verify-bad.log"; then
  echo "ok: verify exits non-zero after flipping byte $victim_at of $victim_file and names it: $(grep -m1 -- "$victim_file" "$work/verify-bad.log")"
else
  fail "verify exited non-zero but does not name $victim_file"; sed 's/^/    | /' "$work/verify-bad.log"
fi
if "$corockpt" load --spec "$spec" "$bad" --check >"$work/load-bad.log" 2>&1; then
  fail "load --check exited 0 on the corrupted checkpoint"
elif grep -q -i -e checksum -e mismatch -e corrupt "$work/load-bad.log"; then
  echo "ok: load --check exits non-zero on it: $(grep -m1 'corockpt load' "$work/load-bad.log" || tail -n 1 "$work/load-bad.log")"
else
  fail "load --check exited non-zero on the corrupted checkpoint, but not for a checksum or value mismatch"
  sed 's/^/    | /' "$work/load-bad.log" | tail -n 5
fi

# 8. what a reader would trip on: verify fails, naming each, on a copy with a stray
# *.safetensors file, a mesh that contradicts the world size and a truncated data file
# (giving its true size beside the recorded one).
odd="$work/odd"
cp -r "$ckpt" "$odd"
expect=$("$python" - "$odd" "$work/meta.json" <<'EOF'
import json, os, shutil, sys
d = sys.argv[1]
meta = json.load(open(sys.argv[2]))  # every file, from inspect --json
first = sorted(f for f in meta["files"] if f.endswith(".safetensors"))[0]
shutil.copy(os.path.join(d, first), os.path.join(d, "stray.safetensors"))
path = os.path.join(d, "corockpt.metadata.json")  # the header, which holds the meshes
header = json.load(open(path))
header["meshes"][0]["shape"] = [header["world_size"] + 1]
json.dump(header, open(path, "w"))
last = sorted(meta["files"])[-1]
cut = meta["files"][last] // 2
os.truncate(os.path.join(d, last), cut)
print("stray.safetensors: a file named *.safetensors that is not listed in the metadata")
print("has %d ranks, but world_size is %d" % (meta["world_size"] + 1, meta["world_size"]))
print("%s: the file is %d bytes, shorter than the metadata's %d" % (last, cut, meta["files"][last]))
EOF
)
if "$corockpt" verify "$odd" >"$work/verify-odd.log" 2>&1; then
  fail "verify exited 0 on a stray *.safetensors file, a contradicting mesh and a truncated file"
else
  missing=0
  while IFS= read -r line; do
    grep -qF -- "$line" "$work/verify-odd.log" || { fail "verify does not say: $line"; missing=1; }
  done <<<"$expect"
  if ((missing)); then
    sed 's/^/    | /' "$work/verify-odd.log"
  else
    echo "ok: verify exits non-zero on a stray *.safetensors file, a contradicting mesh and a truncated file, naming each"
  fi
fi

if ((failures)); then
  echo "$failures check(s) FAILED"
  exit 1
fi
echo "all checks passed"
