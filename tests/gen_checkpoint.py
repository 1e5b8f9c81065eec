#!/usr/bin/python3
"""Reference safetensors files for tests/test_checkpoint.c, written and read by plain Python.

Debian has no python3-safetensors package, so the reference is a small pure-Python writer and
reader (struct + json + numpy) that follows the format of github.com/huggingface/safetensors:
u64 little-endian header length N, N bytes of UTF-8 JSON, then the data buffer that the
tensors' data_offsets tile exactly.

    /usr/bin/python3 tests/gen_checkpoint.py            # (re)write the fixtures
    /usr/bin/python3 tests/gen_checkpoint.py --check F  # validate a file (e.g. one written
                                                        # by plexus) and print its contents

Fixtures (tests/fixtures/checkpoint/):
  python_written.safetensors   the layout the reference implementation writes: compact JSON,
                               "__metadata__" first, tensors in order, header padded with
                               spaces to a multiple of 8. test_checkpoint.c writes the same
                               tensors with px_st_write and requires identical bytes.
  python_unaligned.safetensors the same tensors written differently but validly: indented
                               JSON, metadata last, entries not in offset order, no padding,
                               so the data buffer starts at an odd file offset.
The tensor values are defined identically in test_checkpoint.c (expected_tensors()).
"""
import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "checkpoint")


def tensors():
    """Name -> float32 array; keep in sync with expected_tensors() in test_checkpoint.c."""
    f32 = np.float32
    w = (np.arange(12, dtype=f32) - f32(5.5)) / f32(3)
    bias = np.array([0.0, -0.0, 1.401298464324817e-45, 3.4028234663852886e38,
                     f32(-1) / f32(3)], dtype=f32)
    return {
        "enc.weight_ih_l0": w.reshape(4, 3),
        "head.bias": bias,
        "scalar": np.array(2.5, dtype=f32),
        "empty": np.zeros((0, 3), dtype=f32),
        "d\u00e9.\u00fcn\u00efcode": np.array([1.0, 2.0], dtype=f32),
    }


METADATA = {
    "format": "pt",
    "pipeline": "name: x\n\"quoted\" \\ tab\t \u00fc \u20ac \x01 \x7f end",
    "step": "42",
}


def write(path, named, metadata, canonical=True):
    """Write a safetensors file. canonical: the reference layout (see module doc)."""
    entries, blobs, off = {}, [], 0
    for name, a in named.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        entries[name] = {"dtype": "F32", "shape": list(a.shape),
                         "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if canonical:
        hdr = {"__metadata__": metadata} if metadata else {}
        hdr.update(entries)
        text = json.dumps(hdr, separators=(",", ":"), ensure_ascii=False).encode()
        text += b" " * (-len(text) % 8)
    else:
        hdr = dict(reversed(list(entries.items())))
        hdr["__metadata__"] = metadata
        text = json.dumps(hdr, indent=1, ensure_ascii=True).encode()
        if (8 + len(text)) % 4 == 0:
            text += b"\n"          # make the data start misaligned on purpose
        assert (8 + len(text)) % 4 != 0
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read(path):
    """Pure-Python reader that checks what safetensors requires; returns (tensors, metadata)."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n <= len(raw) - 8, "header length beyond the file"
    hdr = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = hdr.pop("__metadata__", {})
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    data, out, end = raw[8 + n:], {}, 0
    for name, e in sorted(hdr.items(), key=lambda kv: kv[1]["data_offsets"]):
        assert set(e) == {"dtype", "shape", "data_offsets"} and e["dtype"] == "F32", name
        s, t = e["data_offsets"]
        assert s == end and t - s == 4 * int(np.prod(e["shape"], dtype=np.int64)), name
        out[name] = np.frombuffer(data[s:t], dtype="<f4").reshape(e["shape"])
        end = t
    assert end == len(data), "data buffer not covered exactly"
    return out, meta


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        t, meta = read(sys.argv[2])
        ref = tensors()
        for name, a in t.items():
            same = name in ref and ref[name].shape == a.shape and \
                ref[name].tobytes() == a.tobytes()
            print(f"{name!r} {list(a.shape)} {'== reference' if same else a.ravel()[:6]}")
        print("metadata:", meta)
        return
    os.makedirs(OUT, exist_ok=True)
    for fname, canonical in (("python_written.safetensors", True),
                             ("python_unaligned.safetensors", False)):
        path = os.path.join(OUT, fname)
        write(path, tensors(), METADATA, canonical)
        t, meta = read(path)          # round trip through the reader
        assert meta == METADATA
        for name, a in tensors().items():
            assert t[name].tobytes() == a.tobytes() and t[name].shape == a.shape
        print("wrote", os.path.relpath(path, HERE), os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
