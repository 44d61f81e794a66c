#!/usr/bin/env python3
"""Read a consolidated checkpoint (`corockpt consolidate D OUT`) with nothing but the
Python standard library and check it completely.

Usage: read_safetensors.py OUT_DIR [--metadata CKPT/corockpt.metadata.json]
                                   [--optimizer-states]

An independent reader: it shares no code with corockpt or with torch / safetensors.
It parses the safetensors files byte by byte (struct + json) and decodes F32, BF16,
F16, F64, I64, I32, U8 and BOOL by hand. Checks:

- OUT_DIR/model.safetensors.index.json is {"metadata": {"total_size": N},
  "weight_map": {name: file}}; every file it names is a plain file name
  `model-KKKKK-of-NNNNN.safetensors` in OUT_DIR, numbered 1..N with no gap, and no
  other safetensors file lies beside them;
- each file: an 8-byte little-endian header length, a JSON header (no duplicate keys,
  optional `__metadata__` of strings, padding only spaces), tensors whose data_offsets
  are in range, match dtype x shape, do not overlap and leave no hole, and the file ends
  exactly where the data ends;
- weight_map lists exactly the tensors the files hold, each under the file holding it;
  total_size is the sum of the tensors' byte sizes;
- every element of every tensor equals the known value: for tensor name n and row-major
  index i, v = (fnv1a32(n) + i) % 251; floats hold v/8 (exact in every float dtype),
  integers v, bool (v odd);
- with --metadata: the consolidated tensors are exactly the checkpoint's (the non
  `state.*` ones, plus the `state.*` ones with --optimizer-states), each with the
  metadata's dtype and global shape.

Exit codes: 0 all checks pass, 1 a check failed, 2 usage error.
"""
import json
import os
import re
import struct
import sys

# safetensors dtype -> (bytes per element, PyTorch name as corockpt's metadata has it)
DTYPES = {
    "F64": (8, "float64"),
    "F32": (4, "float32"),
    "F16": (2, "float16"),
    "BF16": (2, "bfloat16"),
    "I64": (8, "int64"),
    "I32": (4, "int32"),
    "U8": (1, "uint8"),
    "BOOL": (1, "bool"),
}
FLOATS = {"F64", "F32", "F16", "BF16"}
FILE_NAME = re.compile(r"^model-(\d{5})-of-(\d{5})\.safetensors$")


class CheckFailed(Exception):
    pass


def fail(message):
    raise CheckFailed(message)


def fnv1a32(name):
    h = 2166136261
    for b in name.encode("utf-8"):
        h ^= b
        h = (h * 16777619) & 0xFFFFFFFF
    return h


def f16_to_float(bits):
    """IEEE binary16 bits -> Python float, decoded by hand."""
    sign = -1.0 if bits & 0x8000 else 1.0
    exp = (bits >> 10) & 0x1F
    frac = bits & 0x3FF
    if exp == 0:
        return sign * frac * 2.0 ** -24  # subnormal (or zero)
    if exp == 31:
        return sign * float("inf") if frac == 0 else float("nan")
    return sign * (1.0 + frac / 1024.0) * 2.0 ** (exp - 15)


def bf16_to_float(bits):
    """bfloat16 bits are the top half of a float32's."""
    return struct.unpack("<f", struct.pack("<I", (bits & 0xFFFF) << 16))[0]


def decode(st_dtype, data):
    """The elements of `data` as Python numbers (floats, ints, or 0/1 for bool)."""
    n = len(data) // DTYPES[st_dtype][0]
    if st_dtype == "F64":
        return struct.unpack("<%dd" % n, data)
    if st_dtype == "F32":
        return struct.unpack("<%df" % n, data)
    if st_dtype == "F16":
        return [f16_to_float(b) for b in struct.unpack("<%dH" % n, data)]
    if st_dtype == "BF16":
        return [bf16_to_float(b) for b in struct.unpack("<%dH" % n, data)]
    if st_dtype == "I64":
        return struct.unpack("<%dq" % n, data)
    if st_dtype == "I32":
        return struct.unpack("<%di" % n, data)
    if st_dtype == "U8":
        return data  # bytes index as ints
    if st_dtype == "BOOL":
        for i, b in enumerate(data):
            if b > 1:
                fail("BOOL element %d is byte %d, neither 0 nor 1" % (i, b))
        return data
    fail("unknown dtype " + st_dtype)


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            fail("duplicate key %r in a JSON object" % key)
        out[key] = value
    return out


def read_file(path):
    """The header (without __metadata__) of one safetensors file and its data bytes,
    after checking its structure."""
    with open(path, "rb") as f:
        blob = f.read()
    name = os.path.basename(path)
    if len(blob) < 8:
        fail("%s: %d bytes, shorter than the header length" % (name, len(blob)))
    (header_len,) = struct.unpack("<Q", blob[:8])
    if 8 + header_len > len(blob):
        fail("%s: header length %d runs past the end of the file" % (name, header_len))
    raw = blob[8 : 8 + header_len]
    text = raw.decode("utf-8")
    stripped = text.rstrip(" ")
    if not stripped.startswith("{") or not stripped.endswith("}"):
        fail("%s: the header is not a JSON object padded with spaces" % name)
    header = json.loads(stripped, object_pairs_hook=no_duplicates)
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        fail("%s: __metadata__ is not a map of strings" % name)
    data = blob[8 + header_len :]
    spans = []
    for tname, entry in header.items():
        if set(entry) != {"dtype", "shape", "data_offsets"}:
            fail("%s: %s: header entry keys %s" % (name, tname, sorted(entry)))
        st_dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        if st_dtype not in DTYPES:
            fail("%s: %s: unknown dtype %r" % (name, tname, st_dtype))
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            fail("%s: %s: bad shape %r" % (name, tname, shape))
        if not (0 <= begin <= end <= len(data)):
            fail("%s: %s: data_offsets [%d, %d] outside the %d data bytes" % (name, tname, begin, end, len(data)))
        if end - begin != numel(shape) * DTYPES[st_dtype][0]:
            fail("%s: %s: %d bytes for %s %r" % (name, tname, end - begin, st_dtype, shape))
        spans.append((begin, end, tname))
    spans.sort()
    at = 0
    for begin, end, tname in spans:
        if begin != at:
            fail("%s: %s starts at %d, expected %d (a hole or an overlap)" % (name, tname, begin, at))
        at = end
    if at != len(data):
        fail("%s: the tensors end at %d but the data section has %d bytes" % (name, at, len(data)))
    return header, data


def check_values(file_name, tname, entry, data):
    st_dtype = entry["dtype"]
    begin, end = entry["data_offsets"]
    try:
        values = decode(st_dtype, data[begin:end])
    except CheckFailed as e:
        fail("%s: %s: %s" % (file_name, tname, e))
    base = fnv1a32(tname)
    for i, got in enumerate(values):
        v = (base + i) % 251
        want = v / 8.0 if st_dtype in FLOATS else (v % 2 if st_dtype == "BOOL" else v)
        if got != want:
            fail("%s: %s (%s %r): element %d = %r, expected %r"
                 % (file_name, tname, st_dtype, entry["shape"], i, got, want))
    return len(values)


def main(argv):
    args = argv[1:]
    metadata_path = None
    optimizer_states = False
    positional = []
    while args:
        a = args.pop(0)
        if a == "--metadata" and args:
            metadata_path = args.pop(0)
        elif a == "--optimizer-states":
            optimizer_states = True
        elif a.startswith("-"):
            print(__doc__, file=sys.stderr)
            return 2
        else:
            positional.append(a)
    if len(positional) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = positional[0]

    try:
        with open(os.path.join(out, "model.safetensors.index.json"), "rb") as f:
            index = json.loads(f.read().decode("utf-8"), object_pairs_hook=no_duplicates)
        if set(index) != {"metadata", "weight_map"}:
            fail("index keys %s, expected metadata and weight_map" % sorted(index))
        total_size = index["metadata"].get("total_size")
        weight_map = index["weight_map"]
        if not isinstance(total_size, int) or not isinstance(weight_map, dict):
            fail("index: total_size not an integer or weight_map not an object")

        files = sorted(set(weight_map.values()))
        count = None
        for k, fname in enumerate(files, start=1):
            m = FILE_NAME.match(fname)
            if not m:
                fail("index: file name %r is not model-KKKKK-of-NNNNN.safetensors" % fname)
            if int(m.group(1)) != k:
                fail("index: file %r is not number %d (a gap in the numbering)" % (fname, k))
            if count is None:
                count = int(m.group(2))
            elif int(m.group(2)) != count:
                fail("index: file %r disagrees on the file count %d" % (fname, count))
        if files and count != len(files):
            fail("index: the files say there are %d of them, the weight_map names %d" % (count, len(files)))
        on_disk = sorted(n for n in os.listdir(out) if n.endswith(".safetensors"))
        if on_disk != files:
            fail("safetensors files on disk %s != the index's %s" % (on_disk, files))

        seen = {}  # tensor name -> (file, dtype, shape)
        size = 0
        elements = 0
        for fname in files:
            header, data = read_file(os.path.join(out, fname))
            for tname, entry in sorted(header.items()):
                if tname in seen:
                    fail("%s: %s is also in %s" % (fname, tname, seen[tname][0]))
                if weight_map.get(tname) != fname:
                    fail("%s: holds %s but the weight_map says %r" % (fname, tname, weight_map.get(tname)))
                seen[tname] = (fname, entry["dtype"], entry["shape"])
                begin, end = entry["data_offsets"]
                size += end - begin
                elements += check_values(fname, tname, entry, data)
        missing = sorted(set(weight_map) - set(seen))
        if missing:
            fail("weight_map names tensors no file holds: %s" % missing[:5])
        if total_size != size:
            fail("index total_size %d != %d bytes of tensors" % (total_size, size))
        print("ok: index: %d files, weight_map of %d tensors, total_size %d" % (len(files), len(weight_map), size))
        print("ok: every element of %d tensors (%d elements) equals its known value" % (len(seen), elements))

        if metadata_path:
            with open(metadata_path, "rb") as f:
                meta = json.loads(f.read().decode("utf-8"))
            want = {n: r for n, r in meta["tensors"].items() if optimizer_states or not n.startswith("state.")}
            if set(want) != set(seen):
                fail("tensors differ from the checkpoint's: missing %s, extra %s"
                     % (sorted(set(want) - set(seen))[:5], sorted(set(seen) - set(want))[:5]))
            for tname, record in want.items():
                _, st_dtype, shape = seen[tname]
                if DTYPES[st_dtype][1] != record["dtype"] or list(shape) != list(record["shape"]):
                    fail("%s: %s %r in the consolidated file, %s %r in the checkpoint"
                         % (tname, st_dtype, shape, record["dtype"], record["shape"]))
            print("ok: names, dtypes and shapes equal the checkpoint's metadata (%d tensors%s)"
                  % (len(want), ", optimizer states included" if optimizer_states else ""))
    except CheckFailed as e:
        print("FAIL: %s" % e)
        return 1
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error) as e:
        print("FAIL: %s: %s" % (type(e).__name__, e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
