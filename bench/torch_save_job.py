"""The torch.save contender of corockpt_bench_save (bench/save_bench.cpp), run by Debian's
python3-torch as `python3 torch_save_job.py JOB.json`.

The job names the files to write, each with its tensors (name, float32 element count;
-1 for a 0-d tensor, Adam's step), the threads to save on, and where the result goes.
One dict of tensors per file is built before the clock starts; then torch.save of each
to its path and an fsync of it, the files on `threads` threads (as ranks would save at
once). The result, as JSON: the seconds, the CPU seconds of this process and the bytes
written.
"""
import json, os, resource, sys, time
import torch
from concurrent.futures import ThreadPoolExecutor
job = json.load(open(sys.argv[1]))
files = []
for f in job["files"]:
    d = {}
    for i, (name, n) in enumerate(f["tensors"]):
        d[name] = torch.tensor(1.0) if n < 0 else torch.arange(n, dtype=torch.float32).add_(i + 1)
    files.append((f["path"], d))
def save(item):
    path, d = item
    torch.save(d, path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
c0, t0 = cpu(), time.perf_counter()
if job["threads"] > 1:
    with ThreadPoolExecutor(job["threads"]) as pool:
        list(pool.map(save, files))
else:
    for item in files:
        save(item)
t1, c1 = time.perf_counter(), cpu()
size = sum(os.path.getsize(p) for p, _ in files)
json.dump({"seconds": t1 - t0, "cpu": c1 - c0, "bytes": size}, open(job["result"], "w"))
