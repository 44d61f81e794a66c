#!/usr/bin/env python3
"""Write a tiny checkpoint in PyTorch DCP's HuggingFace safetensors layout,
in pure Python (no torch), with values from the known-value formula used by
torch_hf_load.py. Used to prove that script against a known-good layout.

Usage: make_fake_ckpt.py OUT_DIR [EXPECT_JSON]
  (EXPECT_JSON defaults to OUT_DIR/expect.json)

Layout written (what torch's HuggingFaceStorageWriter(save_distributed=True) writes):
  OUT_DIR/model-00001-of-00002.safetensors
      model.layers.0.weight  F32  rows 0..2 of [5, 3]   saved_offsets [0, 0]
      model.embed.weight     BF16 [4, 2]                saved_offsets [0, 0]
  OUT_DIR/model-00002-of-00002.safetensors
      model.layers.0.weight  F32  rows 3..4 of [5, 3]   saved_offsets [3, 0]
      step                   I64  0-d                   saved_offsets []
      mask                   BOOL [3]                   saved_offsets [0]
      state.model.layers.0.weight.exp_avg  F32 [5, 3]   saved_offsets [0, 0]
  OUT_DIR/corockpt.metadata.json   (unrelated file; the reader must ignore it)
  OUT_DIR/expect.json              (input for torch_hf_load.py)

Each file's safetensors header carries
  "__metadata__": {"DCP_SHARDING_INFO": "<json: fqn -> {\"saved_offsets\": [...]}>",
                   "DCP_VERSION": "1.0", "format": "pt"}
"""
import json
import os
import struct
import sys


def fnv1a32(name: str) -> int:
    h = 2166136261
    for b in name.encode("utf-8"):
        h ^= b
        h = (h * 16777619) & 0xFFFFFFFF
    return h


# safetensors dtype -> (expect.json torch dtype name, kind, struct code, itemsize)
DTYPES = {
    "F64": ("float64", "f", "d", 8),
    "F32": ("float32", "f", "f", 4),
    "F16": ("float16", "f", "e", 2),
    "BF16": ("bfloat16", "bf16", None, 2),
    "I64": ("int64", "i", "q", 8),
    "I32": ("int32", "i", "i", 4),
    "I16": ("int16", "i", "h", 2),
    "I8": ("int8", "i", "b", 1),
    "U8": ("uint8", "i", "B", 1),
    "BOOL": ("bool", "b", "B", 1),
}


def value(kind, v):
    if kind in ("f", "bf16"):
        return v / 8.0
    if kind == "b":
        return 1 if v % 2 == 1 else 0
    return v


def encode(st_dtype, values):
    _, kind, code, _ = DTYPES[st_dtype]
    out = bytearray()
    for x in values:
        if kind == "bf16":
            bits = struct.unpack("<I", struct.pack("<f", x))[0]
            bits += 0x7FFF + ((bits >> 16) & 1)  # round to nearest even
            out += struct.pack("<H", (bits >> 16) & 0xFFFF)
        elif kind == "i" and code == "b":
            out += struct.pack("<b", ((x + 128) % 256) - 128)  # wrap like a cast
        else:
            out += struct.pack("<" + code, x)
    return bytes(out)


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def chunk_values(name, st_dtype, global_shape, offsets, sizes):
    """Row-major values of the sub-block [offsets, offsets+sizes) of the global tensor."""
    kind = DTYPES[st_dtype][1]
    base = fnv1a32(name)
    strides = []
    s = 1
    for d in reversed(global_shape):
        strides.insert(0, s)
        s *= d
    vals = []
    for local in range(numel(sizes)):
        # unravel local index within the chunk, shift by offsets, ravel globally
        rem, gi = local, 0
        for dim in reversed(range(len(sizes))):
            c = rem % sizes[dim]
            rem //= sizes[dim]
            gi += (c + offsets[dim]) * strides[dim]
        vals.append(value(kind, (base + gi) % 251))
    return vals


def write_safetensors(path, entries):
    """entries: list of (name, st_dtype, global_shape, offsets, sizes)."""
    header = {}
    sharding = {}
    data = bytearray()
    for name, st_dtype, gshape, offs, sizes in entries:
        blob = encode(st_dtype, chunk_values(name, st_dtype, gshape, offs, sizes))
        assert len(blob) == numel(sizes) * DTYPES[st_dtype][3]
        header[name] = {
            "dtype": st_dtype,
            "shape": list(sizes),
            "data_offsets": [len(data), len(data) + len(blob)],
        }
        sharding[name] = {"saved_offsets": list(offs)}
        data += blob
    header["__metadata__"] = {
        "DCP_SHARDING_INFO": json.dumps(sharding),
        "DCP_VERSION": "1.0",
        "format": "pt",
    }
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)  # pad like safetensors does (8-byte align)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        f.write(data)


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[1]
    expect_path = argv[2] if len(argv) == 3 else os.path.join(out, "expect.json")
    os.makedirs(out, exist_ok=True)

    W = "model.layers.0.weight"
    files = {
        "model-00001-of-00002.safetensors": [
            (W, "F32", [5, 3], [0, 0], [3, 3]),
            ("model.embed.weight", "BF16", [4, 2], [0, 0], [4, 2]),
        ],
        "model-00002-of-00002.safetensors": [
            (W, "F32", [5, 3], [3, 0], [2, 3]),
            ("step", "I64", [], [], []),
            ("mask", "BOOL", [3], [0], [3]),
            ("state.model.layers.0.weight.exp_avg", "F32", [5, 3], [0, 0], [5, 3]),
        ],
    }
    expect = {}
    for fname, entries in files.items():
        write_safetensors(os.path.join(out, fname), entries)
        for name, st_dtype, gshape, _, _ in entries:
            expect[name] = {"dtype": DTYPES[st_dtype][0], "shape": gshape}

    with open(os.path.join(out, "corockpt.metadata.json"), "w") as f:
        json.dump({"note": "unrelated file; must be ignored by the reader"}, f)
    with open(expect_path, "w") as f:
        json.dump(expect, f, indent=1)
    print(f"wrote {len(files)} safetensors files, {len(expect)} tensors to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
