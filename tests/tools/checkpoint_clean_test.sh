#!/usr/bin/env bash
# `corockpt clean ROOT` and a later save remove what killed saves left, and never a live
# save's directory (src/corockpt/ckpt/temporary_directory.hpp):
# 1. a real `corockpt save` of B is stopped (SIGSTOP) once its data files hold space in
#    B.tmp-*, alive; a directory the shell holds locked (flock) is alive too: clean keeps
#    both ("in use") and never touches names that are not a save's temporary directory
#    (another suffix, a file, a symlink to a directory elsewhere);
# 2. the stopped save is killed (SIGKILL): clean --dry-run lists its leftover with the
#    space it held (st_blocks * 512, measured here with find) and removes nothing; clean
#    removes it and reports the same bytes and the total; the committed checkpoint beside
#    it still verifies; once the shell lets go of its lock, clean removes that one too;
# 3. another save of B is stopped and killed: the next `corockpt save` of B removes the
#    leftover first, says so with its bytes, and commits.
# A save stopped after its commit (the stop comes a few ms late) is started again: the
# retries are not a timing assertion. usage: checkpoint_clean_test.sh COROCKPT SEED_SPEC
set -euo pipefail
corockpt="$1" spec="$2"

if ! command -v flock >/dev/null; then
  echo "skipped: no flock(1) to hold a directory's lock from the shell"
  exit 77
fi
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
root="$work/checkpoints"
mkdir -p "$root"
failures=0
fail() {
  echo "FAILED: $*"
  failures=$((failures + 1))
}
show() { sed 's/^/    | /' "$1" | tail -n 20; }
# The space a directory and its entries hold, as clean counts it.
space_of() { find "$1" -maxdepth 1 -printf '%b\n' 2>/dev/null | awk '{ s += $1 * 512 } END { print s + 0 }'; }

# A model whose save writes ~36 MiB in ~22 files: long enough to be stopped mid-write.
big="$work/big.json"
cat >"$big" <<'JSON'
{
  "world_size": 8,
  "meshes": {"global": {"shape": [8], "dim_names": ["fsdp"]}},
  "units": [{"name": "root", "prefix": "", "mesh": "global", "layout": "flat"}],
  "params": [
    {"unit": "root", "name": "emb", "shape": [512, 1024], "dtype": "float64"},
    {"unit": "root", "name": "out", "shape": [511, 1024], "dtype": "float64"},
    {"unit": "root", "name": "bias", "shape": [1000], "dtype": "float64"}
  ],
  "optimizer": {"type": "adam", "lr": 0.1}
}
JSON

# A save's temporary directory: DIR.tmp-<16 hex digits>.
hex16='[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]'

# reserved DIR: DIR.tmp-* holds over 1 MB (its data files' space is reserved).
reserved() {
  local d
  for d in $(compgen -G "$1.tmp-$hex16"); do (($(space_of "$d") > 1000000)) && return 0; done
  return 1
}
# stopped_save DIR: starts a save of DIR and stops it once DIR.tmp-* holds over 1 MB;
# sets pid and partial. A save that committed before the stop is removed and started again.
stopped_save() {
  local dir="$1" try
  for try in $(seq 1 30); do
    "$corockpt" save --spec "$big" "$dir" >"$work/stopped.log" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null && ! reserved "$dir"; do sleep 0.002; done
    kill -STOP "$pid" 2>/dev/null || true
    partial=$(compgen -G "$dir.tmp-$hex16" | head -n 1 || true)
    if [[ -n "$partial" && ! -e "$dir" ]] && [[ "$(ps -o stat= -p "$pid" 2>/dev/null)" == T* ]]; then
      return 0
    fi
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
    rm -rf "$dir" "$dir".tmp-$hex16
  done
  return 1
}
# kill_stopped: SIGKILLs the stopped save, as a crash would.
kill_stopped() {
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
}

# A committed checkpoint beside the leftovers: clean must leave it whole.
if ! "$corockpt" save --spec "$spec" "$root/A" >"$work/saveA.log" 2>&1; then
  echo "FAILED: saving checkpoint A"; show "$work/saveA.log"; exit 1
fi

# 1. Live: a stopped save, and a directory the shell holds locked; names that are not ours.
stopped_save "$root/B" || { echo "FAILED: no save of B could be stopped before its commit"; exit 1; }
held="$root/C.tmp-0123456789abcdef"
mkdir "$held"
exec {held_fd}<"$held"
flock -n "$held_fd"
mkdir "$root/notes.tmp-old" "$root/B.tmp-0123456789abcdef.bak" "$work/outside"
touch "$root/file.tmp-0123456789abcdef" "$work/outside/precious"
ln -s "$work/outside" "$root/link.tmp-0123456789abcdef"
not_ours=("$root/notes.tmp-old" "$root/B.tmp-0123456789abcdef.bak" "$root/file.tmp-0123456789abcdef"
  "$root/link.tmp-0123456789abcdef" "$work/outside/precious")

if "$corockpt" clean "$root" >"$work/clean-live.log" 2>&1; then
  if grep -q '^removed' "$work/clean-live.log"; then fail "clean removed something while only live saves were there"; show "$work/clean-live.log"; fi
  for d in "$partial" "$held"; do
    if [[ ! -d "$d" ]]; then
      fail "clean removed the live $d"
    elif ! grep -q "^kept $d: in use" "$work/clean-live.log"; then
      fail "clean does not say it kept the live $d"; show "$work/clean-live.log"
    fi
  done
  ((failures)) || echo "ok: clean keeps a stopped save's $(basename "$partial") and a shell-locked directory: $(tail -n 1 "$work/clean-live.log")"
else
  fail "clean exited non-zero with only live saves"; show "$work/clean-live.log"
fi

# 2. Killed: dry run, then clean, each reporting the bytes the leftover held.
kill_stopped
expected=$(space_of "$partial")
if "$corockpt" clean --dry-run "$root" >"$work/dry.log" 2>&1 && grep -qx "would remove $partial: $expected bytes (.*)" "$work/dry.log" &&
  grep -q "^would free $expected bytes .* in 1 directories" "$work/dry.log" && [[ -d "$partial" ]]; then
  echo "ok: clean --dry-run lists the killed save's leftover and removes nothing: $(tail -n 1 "$work/dry.log")"
else
  fail "clean --dry-run of the killed save's $partial ($expected bytes)"; show "$work/dry.log"
fi
if "$corockpt" clean "$root" >"$work/clean.log" 2>&1 && grep -qx "removed $partial: $expected bytes (.*)" "$work/clean.log" &&
  grep -q "^freed $expected bytes .* in 1 directories" "$work/clean.log" && [[ ! -e "$partial" ]]; then
  echo "ok: clean removes the killed save's leftover and reports what it freed: $(tail -n 1 "$work/clean.log")"
else
  fail "clean of the killed save's $partial ($expected bytes)"; show "$work/clean.log"
fi
[[ -d "$held" ]] || fail "clean removed $held while the shell holds its lock"
for p in "${not_ours[@]}"; do [[ -e "$p" || -L "$p" ]] || fail "clean removed $p, which is not a save's temporary directory"; done
if ! "$corockpt" verify "$root/A" >"$work/verifyA.log" 2>&1; then fail "A no longer verifies after clean"; show "$work/verifyA.log"; fi
exec {held_fd}<&-
if "$corockpt" clean "$root" >"$work/clean-released.log" 2>&1 && grep -q "^removed $held: " "$work/clean-released.log" && [[ ! -e "$held" ]]; then
  echo "ok: once its lock is let go, clean removes $(basename "$held")"
else
  fail "clean after the shell let go of $held"; show "$work/clean-released.log"
fi

# 3. A later save of B removes a killed save's leftover first and says so.
stopped_save "$root/B" || { echo "FAILED: no second save of B could be stopped before its commit"; exit 1; }
kill_stopped
expected=$(space_of "$partial")
if "$corockpt" save --spec "$big" "$root/B" >"$work/resave.log" 2>&1 &&
  grep -q "^removed $partial, left by a killed save: $expected bytes" "$work/resave.log" && [[ ! -e "$partial" ]] &&
  [[ -f "$root/B/corockpt.metadata.json" ]] && ! compgen -G "$root/B.tmp-$hex16" >/dev/null; then
  echo "ok: a later save of B removes the leftover first: $(grep '^removed' "$work/resave.log")"
else
  fail "a save of B after a killed one ($partial, $expected bytes)"; show "$work/resave.log"
fi

# A root that cannot be listed is an error naming it.
if "$corockpt" clean "$work/missing" >"$work/missing.log" 2>&1; then
  fail "clean of a missing root exited 0"
elif grep -q "$work/missing" "$work/missing.log"; then
  echo "ok: clean of a missing root exits non-zero naming it"
else
  fail "clean of a missing root does not name it"; show "$work/missing.log"
fi

if ((failures)); then
  echo "$failures check(s) FAILED"
  exit 1
fi
echo "all checks passed"
