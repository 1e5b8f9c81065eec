#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/ (small files,
committed). Run from anywhere with Debian's python3 (numpy): /usr/bin/python3 tests/fuzz/gen_corpus.py
The pipeline corpus also takes every malformed pipeline of tests/pipelines/bad and tiny.yaml."""
import gzip
import io
import json
import os
import shutil
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))


def out(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ---------------------------------------------------------------- pipelines
PIPELINES = {
    "copy-embedding": """name: copy
seed: 3
data:
  train: {source: copy, n: 40, min_len: 2, max_len: 5, symbols: 6}
model:
  - {name: emb, kind: embedding, vocab: $x_vocab, dim: 8}
  - {name: flat, kind: flatten}
  - {name: head, kind: linear, units: 6}
loss: {kind: bce}
train: {epochs: 1, batch: 4, optimizer: {kind: sgd, lr: 0.1, momentum: 0.9}}
""",
    "series-mse": """name: series
seed: 5
data:
  train: {source: series, n: 20, seq_len: 10, period: 5, noise: 0.1}
  val_split: 0.25
model:
  - {name: a, kind: linear, units: 8}
  - {name: t, kind: tanh}
  - {name: b, kind: linear, units: 8, input: input}
  - {name: s, kind: sigmoid, input: b}
  - {name: sum, kind: add, inputs: [t, s]}
  - {name: cat, kind: concat, inputs: [sum, a]}
  - {name: head, kind: linear, units: 1}
loss: {kind: mse, input: head, target: label}
train:
  epochs: 2
  batch: 5
  optimizer: {kind: adamw, lr: 3e-3, weight_decay: 0.01}
  schedule: {kind: cosine}
  clip_grad_norm: 1
  checkpoint: {every: 2, keep: 2}
  early_stopping: {patience: 2, monitor: val_loss}
eval: {naive_baseline: true}
""",
    "tiny-variants": """name: tiny2
description: "csv, reshape, relu, dropout, softmax + bce"
seed: 1
data:
  train: {source: csv, path: tests/data/tiny.csv, header: true, limit: 50, scale: 1/2}
  test: {source: csv, path: tests/data/tiny.csv, header: true, only_classes: [0, 1]}
model:
  - {name: r, kind: reshape, shape: [2, 2]}
  - {name: f, kind: flatten}
  - {name: h, kind: linear, units: 6, bias: false}
  - {name: act, kind: relu}
  - {name: drop, kind: dropout, p: 0.5}
  - {name: head, kind: linear, units: 3}
  - {name: sm, kind: softmax}
loss: {kind: cross_entropy, input: head, target: label}
train: {epochs: 1, batch: 16, optimizer: {kind: rmsprop, lr: 0.01},
        schedule: {kind: step, step_size: 1, gamma: 0.5, warmup: 2}}
""",
    "plugins-prefer": """name: prefer
plugins: {prefer: {linear: core}}
data: {train: {source: csv, path: tests/data/tiny.csv, header: true}}
model: [{name: head, kind: linear, units: 3, impl: core}]
loss: {kind: cross_entropy, input: head, target: label}
train: {optimizer: {kind: adagrad}}
""",
}


def pipelines():
    for name, text in PIPELINES.items():
        out("pipeline", name + ".yaml", text)
    shutil.copy(os.path.join(SRC, "tests/pipelines/tiny.yaml"),
                os.path.join(HERE, "corpus/pipeline/tiny.yaml"))
    bad = os.path.join(SRC, "tests/pipelines/bad")
    for f in sorted(os.listdir(bad)):
        if f.endswith(".yaml"):
            shutil.copy(os.path.join(bad, f), os.path.join(HERE, "corpus/pipeline", "bad-" + f))


# ---------------------------------------------------------------- safetensors
def safetensors(tensors, meta=None, pad=True):
    hdr = {}
    if meta:
        hdr["__metadata__"] = meta
    off, blob = 0, b""
    for name, arr in tensors:
        a = np.ascontiguousarray(arr, dtype="<f4")
        hdr[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
        blob += a.tobytes()
    h = json.dumps(hdr, separators=(",", ":")).encode()
    while pad and len(h) % 8:
        h += b" "
    return struct.pack("<Q", len(h)) + h + blob


def checkpoints():
    rng = np.random.default_rng(7)
    good = safetensors([("hidden.weight", rng.standard_normal((4, 3))),
                        ("hidden.bias", rng.standard_normal(4)),
                        ("head.weight", rng.standard_normal((2, 4)))],
                       {"format": "pt", "plexus.step": "12", "plexus.name": "t\u00e9st"})
    out("checkpoint", "good.safetensors", good)
    out("checkpoint", "empty-tensor.safetensors", safetensors([("e", np.zeros((0, 3)))]))
    out("checkpoint", "scalar.safetensors", safetensors([("s", np.float32(2.5))]))
    out("checkpoint", "no-tensors.safetensors", safetensors([], {"a": "b"}))
    out("checkpoint", "unpadded.safetensors", safetensors([("x", np.ones(3))], pad=False))
    out("checkpoint", "truncated.safetensors", good[:len(good) - 5])
    out("checkpoint", "short.safetensors", b"\x10\x00\x00")
    h = b'{"x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}'
    out("checkpoint", "f16.safetensors", struct.pack("<Q", len(h)) + h + b"\0" * 4)
    h = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
    out("checkpoint", "overlap.safetensors", struct.pack("<Q", len(h)) + h + b"\0" * 8)
    out("checkpoint", "huge-header-len.safetensors", struct.pack("<Q", 2**64 - 1) + b"{}")
    h = '{"\\u00e9\\ud83d\\ude00":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'.encode()
    out("checkpoint", "escapes.safetensors", struct.pack("<Q", len(h)) + h + b"\0" * 4)


# ---------------------------------------------------------------- idx
def idx(n, rows, cols, labels=True, extra=b"", gz=False):
    pix = bytes((i * 31) % 256 for i in range(n * rows * cols))
    img = struct.pack(">IIII", 0x803, n, rows, cols) + pix + extra
    lab = struct.pack(">II", 0x801, n) + bytes(i % 10 for i in range(n))
    if gz:
        b = io.BytesIO()
        with gzip.GzipFile(fileobj=b, mode="wb", mtime=0) as g:
            g.write(img)
        img = b.getvalue()
    return struct.pack("<H", len(img)) + img + (lab if labels else b"")


def idxs():
    out("idx", "small.bin", idx(3, 4, 5))
    out("idx", "small-gz.bin", idx(2, 3, 3, gz=True))
    out("idx", "trailing.bin", idx(2, 2, 2, extra=b"xx"))
    out("idx", "no-labels.bin", idx(2, 2, 2, labels=False))
    out("idx", "lying.bin", struct.pack("<H", 16) + struct.pack(">IIII", 0x803, 0xffffffff, 0xffff, 0xffff)
        + struct.pack(">II", 0x801, 0xffffffff))


# ---------------------------------------------------------------- npy
def npy(arr, version=None, fortran=False):
    b = io.BytesIO()
    a = np.asfortranarray(arr) if fortran else arr
    if version:
        np.lib.format.write_array(b, a, version=version)
    else:
        np.save(b, a)
    return b.getvalue()


def npys():
    rng = np.random.default_rng(3)
    out("npy", "f4.npy", npy(rng.standard_normal((3, 4)).astype("<f4")))
    out("npy", "f8.npy", npy(rng.standard_normal((2, 2, 2))))
    out("npy", "i4.npy", npy(np.arange(5, dtype="<i4")))
    out("npy", "i8.npy", npy(np.arange(6, dtype="<i8").reshape(2, 3)))
    out("npy", "u1.npy", npy(np.arange(4, dtype="u1")))
    out("npy", "i2-v2.npy", npy(np.arange(3, dtype="<i2"), version=(2, 0)))
    out("npy", "u2-v3.npy", npy(np.arange(3, dtype="<u2"), version=(3, 0)))
    out("npy", "fortran.npy", npy(np.arange(6, dtype="<f4").reshape(2, 3), fortran=True))
    out("npy", "scalar.npy", npy(np.float32(1.5)))
    out("npy", "empty.npy", npy(np.zeros((0, 3), dtype="<f4")))
    out("npy", "lying-shape.npy", npy_raw("{'descr': '<f4', 'fortran_order': False, "
                                          "'shape': (100000, 100000), }", b"\0" * 16))
    out("npy", "bad-descr.npy", npy_raw("{'descr': '>c16', 'fortran_order': False, 'shape': (1,), }",
                                        b"\0" * 16))


def npy_raw(header, data):
    h = header.encode()
    h += b" " * (63 - (10 + len(h)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + data


if __name__ == "__main__":
    pipelines()
    checkpoints()
    idxs()
    npys()
