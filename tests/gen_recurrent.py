#!/usr/bin/python3
"""Golden values for the rnn, lstm and gru plugins from PyTorch's nn.RNN/LSTM/GRU.

For every kind x {1, 2} layers x {uni, bi}directional x {full, ragged} lengths (and one rnn
with nonlinearity relu), writes
tests/fixtures/recurrent/<kind>[_relu]_l<layers>_<uni|bi>_<full|ragged>.txt holding
  - the options the layer is built with (as a comment) and every parameter by its PyTorch name
    (the test copies them into the plexus layer by name),
  - x [B,T,F], lengths [B] (ragged only), h0 (and c0) [B, layers*dirs, H] (ragged only, batch
    first: the transpose of PyTorch's h_0),
  - the outputs: seq [B,T,D*H] (zeros at padded steps), state (and cell) [B, layers*dirs, H],
  - a loss = <w_seq, seq> + <w_state, state> (+ <w_cell, cell>) and its gradients with respect
    to every parameter (grad_<name>), x (grad_x) and the initial states (grad_h0, grad_c0).
Ragged batches go through pack_padded_sequence / pad_packed_sequence.
Run with Debian's python3 (python3-torch): /usr/bin/python3 tests/gen_recurrent.py"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_io  # noqa: E402

B, T, F, H = 3, 5, 4, 5
LENGTHS = [5, 2, 4]
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "recurrent")


def generate(kind, layers, bi, ragged, seed, relu=False):
    torch.manual_seed(seed)
    extra = {"nonlinearity": "relu"} if relu else {}
    mod = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](
        F, H, num_layers=layers, bidirectional=bi, batch_first=True, **extra).double()
    dirs = 2 if bi else 1
    with torch.no_grad():  # values exactly representable in float32, as plexus loads them
        for p in mod.parameters():
            p.copy_(p.float().double())
    x = torch.randn(B, T, F).double().requires_grad_()
    init = {}
    if ragged:
        for name in ("h0", "c0") if kind == "lstm" else ("h0",):
            init[name] = torch.randn(B, layers * dirs, H).double().requires_grad_()
    hx = None
    if init:
        hx = tuple(init[n].transpose(0, 1).contiguous() for n in init)
        hx = hx if kind == "lstm" else hx[0]
    if ragged:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.tensor(LENGTHS), batch_first=True, enforce_sorted=False)
        out, hn = mod(packed, hx)
        seq, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    else:
        seq, hn = mod(x, hx)
    hs = hn if kind == "lstm" else (hn,)
    finals = {"state": hs[0].transpose(0, 1)}
    if kind == "lstm":
        finals["cell"] = hs[1].transpose(0, 1)
    w = {"w_seq": torch.rand(seq.shape, dtype=torch.float64) * 2 - 1}
    loss = (w["w_seq"] * seq).sum()
    for name, v in finals.items():
        w["w_" + name] = torch.rand(v.shape, dtype=torch.float64) * 2 - 1
        loss = loss + (w["w_" + name] * v).sum()
    params = dict(mod.named_parameters())
    grads = torch.autograd.grad(loss, list(params.values()) + [x] + list(init.values()))
    t = {}
    for name, p in params.items():
        t[name] = p
    t["x"] = x
    if ragged:
        t["lengths"] = torch.tensor(LENGTHS, dtype=torch.float64)
    t.update(init)
    t["seq"] = seq
    t.update(finals)
    t.update(w)
    names = list(params) + ["x"] + list(init)
    for name, g in zip(names, grads):
        t["grad_" + name] = g
    opts = f"hidden: {H}, layers: {layers}, bidirectional: {'true' if bi else 'false'}"
    if relu:
        opts += ", nonlinearity: relu"
    fname = f"{kind}{'_relu' if relu else ''}_l{layers}_{'bi' if bi else 'uni'}_{'ragged' if ragged else 'full'}.txt"
    fixture_io.write(os.path.join(OUT, fname), t,
                     comment=f"torch.nn.{type(mod).__name__} {opts} batch_first, torch "
                     f"{torch.__version__}, float64\noptions: {opts}")


def main():
    os.makedirs(OUT, exist_ok=True)
    seed = 100
    for kind in ("rnn", "lstm", "gru"):
        for layers in (1, 2):
            for bi in (False, True):
                for ragged in (False, True):
                    generate(kind, layers, bi, ragged, seed)
                    seed += 1
    generate("rnn", 2, True, True, seed, relu=True)


if __name__ == "__main__":
    main()
