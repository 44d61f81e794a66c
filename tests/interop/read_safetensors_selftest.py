#!/usr/bin/env python3
"""Proves read_safetensors.py (the independent reader of consolidated checkpoints)
against files written by another encoder (make_fake_ckpt.py's, which uses struct's
own half-float codec and its own bfloat16 rounding): a good directory with every
dtype passes, and each kind of damage is caught.

Usage: read_safetensors_selftest.py   (python3 standard library only)
Exit codes: 0 pass, 1 fail.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, HERE)
import make_fake_ckpt as fake  # noqa: E402

READER = os.path.join(HERE, "read_safetensors.py")

FILES = {
    "model-00001-of-00002.safetensors": [
        ("a.f32", "F32", [5, 3]),
        ("a.bf16", "BF16", [4, 70]),
        ("a.f16", "F16", [300]),
        ("a.f64", "F64", [2, 2, 2]),
    ],
    "model-00002-of-00002.safetensors": [
        ("b.i64", "I64", []),
        ("b.i32", "I32", [7]),
        ("b.u8", "U8", [260]),
        ("b.bool", "BOOL", [9]),
        ("state.a.f32.step", "F32", []),
        ("b.empty", "F32", [0, 4]),
    ],
}
NAMES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64",
         "I64": "int64", "I32": "int32", "U8": "uint8", "BOOL": "bool"}


def write_dir(out):
    os.makedirs(out)
    weight_map, total, tensors = {}, 0, {}
    for fname, entries in FILES.items():
        fake.write_safetensors(
            os.path.join(out, fname),
            [(n, d, s, [0] * len(s), s) for n, d, s in entries])
        for n, d, s in entries:
            weight_map[n] = fname
            total += fake.numel(s) * fake.DTYPES[d][3]
            tensors[n] = {"dtype": NAMES[d], "shape": s, "chunks": []}
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump({"format": "corockpt", "tensors": tensors}, f)


def run(out, *extra):
    p = subprocess.run([sys.executable, READER, out, *extra], capture_output=True, text=True)
    return p.returncode, (p.stdout + p.stderr).strip()


def edit_index(out, fn):
    path = os.path.join(out, "model.safetensors.index.json")
    with open(path) as f:
        index = json.load(f)
    fn(index)
    with open(path, "w") as f:
        json.dump(index, f)


def flip_last_data_byte(out):
    path = os.path.join(out, "model-00001-of-00002.safetensors")
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        b = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([b[0] ^ 0x01]))


def append_byte(out):
    with open(os.path.join(out, "model-00002-of-00002.safetensors"), "ab") as f:
        f.write(b"\0")


def bad_bool(out):
    # b.bool is the last tensor of file 2 but one before state.a.f32.step; rewrite all
    # of the file's bool bytes to 2 through its header.
    path = os.path.join(out, "model-00002-of-00002.safetensors")
    with open(path, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        begin, end = header["b.bool"]["data_offsets"]
        f.seek(8 + n + begin)
        f.write(b"\2" * (end - begin))


def extra_file(out):
    shutil.copy(os.path.join(out, "model-00002-of-00002.safetensors"),
                os.path.join(out, "model-00003-of-00002.safetensors"))


def main():
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        good = os.path.join(tmp, "good")
        write_dir(good)
        rc, out = run(good, "--metadata", os.path.join(good, "meta.json"), "--optimizer-states")
        if rc == 0:
            print("ok: a good directory with F32/BF16/F16/F64/I64/I32/U8/BOOL, 0-d and empty tensors passes")
        else:
            print("FAILED: the good directory is rejected:\n" + out)
            failures += 1
        damages = [
            ("a flipped data byte", flip_last_data_byte, ()),
            ("total_size off by one", lambda d: edit_index(d, lambda i: i["metadata"].update(total_size=i["metadata"]["total_size"] + 1)), ()),
            ("a tensor under the wrong file", lambda d: edit_index(d, lambda i: i["weight_map"].update({"a.f32": "model-00002-of-00002.safetensors"})), ()),
            ("a tensor missing from the weight_map", lambda d: edit_index(d, lambda i: i["weight_map"].pop("b.i32")), ()),
            ("a weight_map entry no file holds", lambda d: edit_index(d, lambda i: i["weight_map"].update({"ghost": "model-00001-of-00002.safetensors"})), ()),
            ("a trailing byte after the data", append_byte, ()),
            ("a bool byte that is not 0 or 1", bad_bool, ()),
            ("a stray safetensors file", extra_file, ()),
            ("optimizer states not expected", lambda d: None, ("--metadata", None)),
        ]
        for k, (what, damage, extra) in enumerate(damages):
            d = os.path.join(tmp, "bad%d" % k)
            write_dir(d)
            damage(d)
            args = [a if a is not None else os.path.join(d, "meta.json") for a in extra]
            rc, out = run(d, *args)
            if rc == 1:
                print("ok: %s is caught: %s" % (what, out.splitlines()[-1]))
            else:
                print("FAILED: %s: the reader exited %d:\n%s" % (what, rc, out))
                failures += 1
    if failures:
        print("%d check(s) FAILED" % failures)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
