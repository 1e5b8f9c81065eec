#!/usr/bin/python3
"""PyTorch CPU inference (forward only, no_grad) for rnn, lstm and gru, B=32 T=64 I=128 H=256,
timed as ../shared/bench/torch_anchor.py times its lstm inference line (3 warm-up calls, mean of
20), at torch intra-op threads 1 and THREADS, keeping the faster.
Usage: /usr/bin/python3 bench/torch_infer.py [THREADS]   (the anchor has no rnn/gru inference)"""
import os
import subprocess
import sys

th = int(sys.argv[1]) if len(sys.argv) > 1 else 2
if os.environ.get("_INFER_CHILD") is None:
    best = {}
    for tt in sorted({1, th}):
        out = subprocess.run([sys.executable, __file__, str(th)], capture_output=True, text=True,
                             env=dict(os.environ, OPENBLAS_NUM_THREADS=str(th),
                                      _INFER_CHILD=str(tt))).stdout
        for line in out.splitlines():
            name, ms, rest = line.split("\t", 2)
            if name not in best or float(ms.split()[0]) < float(best[name][0].split()[0]):
                best[name] = (ms, rest, tt)
    for name, (ms, rest, tt) in best.items():
        print(f"{name}\t{ms}\t{rest}\ttorch_threads={tt}")
    sys.exit(0)

import time  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["_INFER_CHILD"]))
torch.manual_seed(0)
B, T, I, H = 32, 64, 128, 256
x = torch.randn(B, T, I)
for cell, gates in (("RNN", 1), ("LSTM", 4), ("GRU", 3)):
    m = getattr(torch.nn, cell)(I, H, batch_first=True)
    with torch.no_grad():
        for _ in range(3):
            m(x)
        t = time.perf_counter()
        for _ in range(20):
            m(x)
        dt = (time.perf_counter() - t) / 20
    print(f"{cell.lower()} B{B} T{T} I{I} H{H} infer\t{dt*1e3:.2f} ms/step\t{B*T/dt:.0f} items/s\t"
          f"{2*B*T*gates*H*(I+H)/dt/1e9:.1f} GFLOP/s")
