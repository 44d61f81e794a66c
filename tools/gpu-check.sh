#!/usr/bin/env bash
# Every GPU check of corockpt, from the bundle tools/gpu-bundle.sh built, in one command:
# a GPU machine is at hand rarely and for minutes. Run it there:
#
#   gpu-bundle/gpu-check.sh [BUNDLE]      default BUNDLE: the folder this script is in
#
# One line per check (passed / FAILED / skipped, with its figure); each check's whole
# output goes to a log under $OUT/gpu-check (the device tool brings $OUT back) or a
# temporary folder. Exit 0 only if every check passed; 77 at once, saying why, when there
# is no usable GPU; 1 otherwise. Every check has its own time limit; all of them together
# stay within 8 minutes.
#
# The CUDA runtime (libcudart.so.13) and NCCL (libnccl.so.2) are the machine's: whatever
# the dynamic loader finds, else the nvidia-* wheels under its Python (PyTorch brings
# them), else its CUDA toolkit.
set -uo pipefail

bundle="$(cd "${1:-$(dirname "${BASH_SOURCE[0]}")}" && pwd)"
bin="$bundle/bin"
started=$SECONDS

skip_all() { echo "gpu-check: skipped: $1"; exit 77; }

[ -x "$bin/corockpt" ] || { echo "gpu-check: $bundle is not a bundle (no bin/corockpt): build one with tools/gpu-bundle.sh" >&2; exit 2; }
command -v nvidia-smi >/dev/null 2>&1 || skip_all "no GPU here (no nvidia-smi: no NVIDIA driver)"
gpu_list="$(nvidia-smi -L 2>&1)" || skip_all "no usable GPU (nvidia-smi -L: $gpu_list)"
gpus="$(grep -c '^GPU ' <<<"$gpu_list")"
[ "$gpus" -gt 0 ] || skip_all "no GPU here (nvidia-smi -L lists none)"

logs="${OUT:-$(mktemp -d)}/gpu-check"
mkdir -p "$logs"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# -------------------------------------------------------------------------------------
# The machine's CUDA runtime and NCCL

python_lib_dirs() {
  for python in python3 python; do
    command -v "$python" >/dev/null 2>&1 || continue
    "$python" - <<'EOF' 2>/dev/null
import site, sys
dirs = list(site.getsitepackages()) + [site.getusersitepackages()] + sys.path
print("\n".join(d for d in dirs if d))
EOF
  done
}

# Prints the folder holding library $1 when the loader would not find it by itself.
find_library_dir() {
  local name="$1" dir found
  ldconfig -p 2>/dev/null | grep -q " $name " && return 0
  for dir in $(python_lib_dirs | sort -u); do
    [ -d "$dir/nvidia" ] || continue
    found="$(find "$dir/nvidia" -name "$name" -print -quit 2>/dev/null)"
    [ -n "$found" ] && { dirname "$found"; return 0; }
  done
  for dir in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -e "$dir/$name" ] && { echo "$dir"; return 0; }
  done
  return 1
}

library_path="${LD_LIBRARY_PATH:-}"
for library in libcudart.so.13 libnccl.so.2; do
  if dir="$(find_library_dir "$library")"; then
    [ -n "$dir" ] && library_path="$dir${library_path:+:$library_path}"
  fi
done
export LD_LIBRARY_PATH="$library_path"

# -------------------------------------------------------------------------------------
# Checks

failures=0
report() {  # verdict, name, figure
  printf '%-7s %-58s %s\n' "$1" "$2" "$3"
  [ "$1" = "FAILED" ] && failures=$((failures + 1))
  return 0
}

# run_check NAME LIMIT_S LOG COMMAND...: runs it under its limit. Sets $rc; output in $log.
run_check() {
  local name="$1" limit="$2"
  log="$logs/$3.log"
  shift 3
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    report FAILED "$name" "timed out after ${limit} s (log: $log)"
    tail -n 5 "$log" | sed 's/^/        | /'
    return 1
  fi
  return 0
}

failed_with_tail() {  # name, why
  report FAILED "$1" "$2 (log: $log)"
  tail -n 8 "$log" | sed 's/^/        | /'
}

echo "gpu-check: $(head -n 1 <<<"$gpu_list")$( [ "$gpus" -gt 1 ] && echo " and $((gpus - 1)) more")"
echo "gpu-check: driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)," \
     "bundle $(sed -n 's/^commit: //p' "$bundle/MANIFEST" 2>/dev/null)"

# 1. The programs load: every library resolves.
if unresolved="$(ldd "$bin"/* 2>&1 | grep 'not found' | sort -u | tr -s ' \t' ' ')"; [ -n "$unresolved" ]; then
  report FAILED "ldd: libraries" "not found:$unresolved"
else
  where() { ldd "$bin/test_comm_nccl" | awk -v n="$1" '$1 == n { print $3 }'; }
  report passed "ldd: libraries" "cudart $(where libcudart.so.13), nccl $(where libnccl.so.2)"
fi

# A GPU the driver lists may still be unusable (a driver too old for CUDA 13, a GPU in a
# bad state): CUDA's own verdict, from a test program's main, before any check runs.
if [ "$failures" -eq 0 ]; then
  probe_rc=0
  probe="$(timeout 30 "$bin/test_device_cuda" --list-test-names-only 2>&1)" || probe_rc=$?
  [ "$probe_rc" -eq 77 ] && skip_all "$(grep -m 1 'no usable GPU' <<<"$probe" | sed 's/^skipped: //')"
fi

# 2. The GPU test programs (Catch2; 77 would mean the GPU is not usable).
catch_figure() { grep -E 'All tests passed|test cases' "$log" | tail -n 1; }
for test in test_device_cuda:45 test_gpu_checkpoint:75 test_comm_nccl:75; do
  program="${test%%:*}"
  run_check "$program" "${test##*:}" "$program" "$bin/$program" || continue
  if [ "$rc" -eq 0 ]; then
    report passed "$program" "$(catch_figure)"
  else
    failed_with_tail "$program" "exit $rc: $(catch_figure)"
  fi
done
if [ "$gpus" -eq 1 ]; then
  report skipped "multi-rank NCCL (collectives, a silent peer)" "skipped (1 GPU)"
fi

# 3. Device-to-host copies: the snapshot path against one cudaMemcpyAsync.
if run_check "corockpt_bench_cuda_copy" 45 bench_cuda_copy "$bin/corockpt_bench_cuda_copy" --size-mib 1024 --pairs 5; then
  if [ "$rc" -eq 0 ]; then
    report passed "corockpt_bench_cuda_copy (1 GiB)" "$(grep -E '^ratio = ' "$log") ($(grep -o 'median [0-9.]* GB/s' "$log" | head -n 1) memcpy)"
  else
    failed_with_tail "corockpt_bench_cuda_copy" "exit $rc"
  fi
fi

# 4. Async checkpoints of state in GPU memory, 8 in-process ranks on the one GPU, 20 ms
#    steps (issue 16's case): a snapshot of the whole state, then a budget of 1/4 of it.
for fraction in 0 0.25; do
  name="corockpt_bench_async --device cuda --staging-fraction $fraction"
  if run_check "$name" 75 "bench_async_$fraction" "$bin/corockpt_bench_async" --device cuda \
       --size-gib 1 --pairs 3 --forward-ms 20 --staging-fraction "$fraction" --dir "$work"; then
    if [ "$rc" -eq 0 ]; then
      report passed "$name (1 GiB, 20 ms)" \
        "$(grep -E '^(stall/memcpy|step_with_snapshot/quiet|step_during_persist/quiet|staging/state) = ' "$log" | tr '\n' ' ')"
    else
      failed_with_tail "$name" "exit $rc"
    fi
  fi
done

# 5. Training on the GPU: resume on another world size, GPU <-> host resumes, bit-identical.
if run_check "corockpt_train --device cuda" 90 train_cuda "$bundle/train_cuda_test.sh" "$bin/corockpt_train"; then
  if [ "$rc" -eq 0 ]; then
    report passed "corockpt_train --device cuda (8->4 ranks, GPU<->host)" "$(grep -o 'digest [0-9a-f]*' "$log" | head -n 1)"
  else
    failed_with_tail "corockpt_train --device cuda" "exit $rc"
  fi
fi

# 6. get_state_dict gathered over NCCL on one rank: the same description as on the host.
cat >"$work/one_rank.json" <<'EOF'
{
  "world_size": 1,
  "meshes": {"global": {"shape": [1], "dim_names": ["fsdp"]},
             "dp_ep": {"shape": [1, 1], "dim_names": ["dp", "ep"]}},
  "units": [
    {"name": "root", "prefix": "", "mesh": "global", "layout": "flat"},
    {"name": "experts", "prefix": "ep_layers.{expert}.", "mesh": "dp_ep",
     "shard_dim": "dp", "expert_dim": "ep", "num_experts": 2, "layout": "per_param"}
  ],
  "params": [
    {"unit": "root", "name": "net.0.weight", "shape": [64, 48]},
    {"unit": "root", "name": "net.0.bias", "shape": [48]},
    {"unit": "experts", "name": "w1", "shape": [32, 16]},
    {"unit": "experts", "name": "b1", "shape": [16]}
  ],
  "optimizer": {"type": "adam", "lr": 0.1, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
}
EOF
statedict=("$bin/corockpt" statedict --spec "$work/one_rank.json" --full)
if run_check "corockpt statedict --device cuda --nccl" 30 statedict \
     "${statedict[@]}" --device cuda --nccl --out "$work/cuda.json"; then
  if [ "$rc" -ne 0 ]; then
    failed_with_tail "corockpt statedict --device cuda --nccl" "exit $rc"
  elif ! "${statedict[@]}" --out "$work/host.json" >>"$log" 2>&1; then
    failed_with_tail "corockpt statedict --device cuda --nccl" "the host run it is compared with failed"
  elif ! cmp -s "$work/cuda.json" "$work/host.json"; then
    diff "$work/host.json" "$work/cuda.json" >>"$log"
    failed_with_tail "corockpt statedict --device cuda --nccl" "describes another state dict than on the host"
  else
    report passed "corockpt statedict --device cuda --nccl (1 rank)" "same as on the host"
  fi
fi

echo "gpu-check: $failures failed, in $((SECONDS - started)) s; logs in $logs"
[ "$failures" -eq 0 ]
