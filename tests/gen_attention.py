#!/usr/bin/python3
"""Golden values for the attention plugin from a PyTorch reference (float64).

attention_pool (Raffel & Ellis) and attention_decoder (Bahdanau et al. 2015; Luong et al. 2015
with dot/general/concat scores and input feeding) written with torch ops and PyTorch's
nn.LSTMCell / nn.GRUCell, parameters named as the plugin names them. For each case writes
tests/fixtures/attention/<case>.txt holding
  - every parameter by its plexus name (the test copies them into the layer by name),
  - the inputs: x / memory [B,T,F] with lengths, targets [B,T_out] with lengths, init and
    init_cell [B, layers*dirs, H_enc] (batch first),
  - the outputs: out (c or logits), weights (zeros on padding), and for the decoders the
    greedy decoding from <bos> (greedy_tokens [B,max_len], greedy_len [B]),
  - loss = <w_out, out> + <w_weights, weights> and its gradients grad_<param>, grad_memory
    (grad_x), grad_init, grad_init_cell.
Run with Debian's python3 (python3-torch): /usr/bin/python3 tests/gen_attention.py"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_io  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "attention")
torch.set_default_dtype(torch.float64)


def f32(t):
    """Values exactly representable in float32, as plexus holds them."""
    return t.float().double()


def leaf(t):
    return f32(t).requires_grad_()


def masked_softmax(e, lengths):
    """softmax over j < lengths[b]; exactly 0 elsewhere"""
    mask = torch.arange(e.shape[-1])[None, :] < torch.tensor(lengths)[:, None]
    return e.masked_fill(~mask, float("-inf")).softmax(-1)


def pool_case():
    torch.manual_seed(11)
    B, T, F, U = 3, 5, 4, 6
    lengths = [5, 2, 3]
    p = {"weight": leaf(torch.rand(U, F) - 0.5), "bias": leaf(torch.rand(U) - 0.5),
         "v": leaf(torch.rand(1, U) - 0.5)}
    x = leaf(torch.randn(B, T, F))
    with torch.no_grad():
        for b, n in enumerate(lengths):
            x[b, n:] = 0
    e = (torch.tanh(x @ p["weight"].T + p["bias"]) @ p["v"].T)[..., 0]   # e_t = v^T tanh(W h_t + b)
    a = masked_softmax(e, lengths)
    c = torch.einsum("bt,btf->bf", a, x)
    w_out, w_w = f32(torch.rand(B, F) * 2 - 1), f32(torch.rand(B, T) * 2 - 1)
    loss = (w_out * c).sum() + (w_w * a).sum()
    loss.backward()
    t = dict(p)
    t.update(x=x, x_len=torch.tensor(lengths), out=c, weights=a, w_out=w_out, w_weights=w_w,
             grad_x=x.grad)
    for k, v in p.items():
        t["grad_" + k] = v.grad
    fixture_io.write(os.path.join(OUT, "pool.txt"), t, "attention_pool units: 6")


class Decoder:
    """The reference decoder; cfg mirrors the plugin's options."""

    def __init__(self, cfg, D, init_shape, with_c, seed):
        torch.manual_seed(seed)
        self.cfg = cfg
        H, V, E, A = cfg["hidden"], cfg["vocab"], cfg["embed"], cfg.get("attn_units", cfg["hidden"])
        self.luong = cfg["attention"] == "luong"
        self.score = cfg.get("score", "general") if self.luong else "additive"
        self.feed = cfg.get("input_feeding", False)
        xin = E + (H if self.luong and self.feed else 0) + (0 if self.luong else D)
        cell = (torch.nn.LSTMCell if cfg["cell"] == "lstm" else torch.nn.GRUCell)(xin, H)
        self.cell = cell
        p = {"embed.weight": torch.randn(V, E)}
        for name, t in cell.named_parameters():
            p["cell." + name] = t.detach().clone()
        u = lambda *s: torch.rand(*s) - 0.5  # noqa: E731
        if self.score == "additive":
            p["attn.W"], p["attn.U"], p["attn.v"] = u(A, H), u(A, D), u(1, A)
        elif self.score == "concat":
            p["attn.W_a"], p["attn.v"] = u(A, H + D), u(1, A)
        elif self.score == "general":
            p["attn.W_a"] = u(H, D)
        if self.luong:
            p["attn.W_c"] = u(H, D + H)
        O = H if self.luong else H + D
        p["out.weight"], p["out.bias"] = u(V, O), u(V)
        self.dirs = 0
        if init_shape:
            slots, fe = init_shape
            self.dirs = 2 if slots % 2 == 0 and D == 2 * fe else 1
            S = self.dirs * fe
            for w in ("bridge", "bridge_cell") if with_c else ("bridge",):
                if S != H:
                    p[w + ".weight"], p[w + ".bias"] = u(H, S), u(H)
        self.p = {k: leaf(v) for k, v in p.items()}

    def cell_step(self, x, s):
        p = self.p
        if self.cfg["cell"] == "lstm":   # PyTorch LSTMCell: gates i, f, g, o
            g = x @ p["cell.weight_ih"].T + p["cell.bias_ih"] + s[0] @ p["cell.weight_hh"].T + p["cell.bias_hh"]
            i, f, gg, o = g.chunk(4, 1)
            c = torch.sigmoid(f) * s[1] + torch.sigmoid(i) * torch.tanh(gg)
            return (torch.sigmoid(o) * torch.tanh(c), c)
        gi = x @ p["cell.weight_ih"].T + p["cell.bias_ih"]   # GRUCell: r, z, n
        gh = s[0] @ p["cell.weight_hh"].T + p["cell.bias_hh"]
        ir, iz, inn = gi.chunk(3, 1)
        hr, hz, hn = gh.chunk(3, 1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(inn + r * hn)
        return ((1 - z) * n + z * s[0],)

    def initial(self, B, init, init_c):
        H, p = self.cfg["hidden"], self.p
        s = []
        for w, t in (("bridge", init), ("bridge_cell", init_c)):
            if w == "bridge_cell" and self.cfg["cell"] != "lstm":
                break
            if t is None:
                s.append(torch.zeros(B, H))
                continue
            x0 = t[:, t.shape[1] - self.dirs:, :].reshape(B, -1)   # top layer, fwd ++ bwd
            s.append(torch.tanh(x0 @ p[w + ".weight"].T + p[w + ".bias"]) if w + ".weight" in p else x0)
        return tuple(s)

    def attend(self, q, mem, mlen):
        p = self.p
        H = self.cfg["hidden"]
        if self.score == "dot":
            e = torch.einsum("bh,bjh->bj", q, mem)
        elif self.score == "general":
            e = torch.einsum("bh,bjh->bj", q, mem @ p["attn.W_a"].T)
        else:
            Wq, Wk = ((p["attn.W"], p["attn.U"]) if self.score == "additive"
                      else (p["attn.W_a"][:, :H], p["attn.W_a"][:, H:]))
            e = (torch.tanh((q @ Wq.T)[:, None, :] + mem @ Wk.T) @ p["attn.v"].T)[..., 0]
        a = masked_softmax(e, mlen)
        return a, torch.einsum("bj,bjd->bd", a, mem)

    def step(self, yprev, s, feed, mem, mlen):
        p = self.p
        e = p["embed.weight"][yprev]
        if not self.luong:   # bahdanau: attend with s_{i-1}, then the cell
            a, ctx = self.attend(s[0], mem, mlen)
            s = self.cell_step(torch.cat([e, ctx], 1), s)
            feat = torch.cat([s[0], ctx], 1)
        else:
            s = self.cell_step(torch.cat([e, feed], 1) if self.feed else e, s)
            a, ctx = self.attend(s[0], mem, mlen)
            feat = torch.tanh(torch.cat([ctx, s[0]], 1) @ p["attn.W_c"].T)
        return s, feat, a, feat @ p["out.weight"].T + p["out.bias"]

    def teacher(self, y, ylen, mem, mlen, init, init_c):
        B, T = y.shape
        s = self.initial(B, init, init_c)
        feed = torch.zeros(B, self.cfg["hidden"])
        logits, weights = [], []
        for i in range(T):
            yprev = torch.tensor([self.cfg["bos"] if i == 0 else (int(y[b, i - 1]) if i - 1 < ylen[b] else 0)
                                  for b in range(B)])
            s, feed, a, lg = self.step(yprev, s, feed, mem, mlen)
            valid = torch.tensor([float(i < n) for n in ylen])[:, None]
            logits.append(lg * valid)
            weights.append(a * valid)
        return torch.stack(logits, 1), torch.stack(weights, 1)

    def greedy(self, mem, mlen, init, init_c):
        B, L = mem.shape[0], self.cfg["max_len"]
        with torch.no_grad():
            s = self.initial(B, init, init_c)
            feed = torch.zeros(B, self.cfg["hidden"])
            tok, length = torch.zeros(B, L), [0] * B
            yprev = torch.full((B,), self.cfg["bos"], dtype=torch.long)
            for i in range(L):
                s, feed, _, lg = self.step(yprev, s, feed, mem, mlen)
                yprev = lg.argmax(1)
                for b in range(B):
                    if length[b] == 0:
                        tok[b, i] = yprev[b]
                        if yprev[b] == self.cfg["eos"] or i == L - 1:
                            length[b] = i + 1
        return tok, torch.tensor(length)


def decoder_case(name, cfg, D, init_shape=None, with_c=False, seed=0):
    B, TI, T = 3, 5, 4
    mlen, ylen = [5, 2, 4], [4, 2, 3]
    cfg = dict(dict(bos=1, eos=2, max_len=8), **cfg)
    dec = Decoder(cfg, D, init_shape, with_c, seed)
    mem = leaf(torch.randn(B, TI, D))
    with torch.no_grad():
        for b, n in enumerate(mlen):
            mem[b, n:] = 0
    y = torch.zeros(B, T)
    for b, n in enumerate(ylen):
        y[b, :n] = torch.randint(3, cfg["vocab"], (n,)).double()
    init = leaf(torch.randn(B, *init_shape)) if init_shape else None
    init_c = leaf(torch.randn(B, *init_shape)) if with_c else None
    # raise the <eos> logit until greedy decoding stops at <eos> somewhere
    bias, eos = dec.p["out.bias"], cfg["eos"]
    for _ in range(40):
        _, glen = dec.greedy(mem, mlen, init, init_c)
        if any(n < cfg["max_len"] for n in glen.tolist()):
            break
        with torch.no_grad():
            bias[eos] += 0.125
    logits, weights = dec.teacher(y, ylen, mem, mlen, init, init_c)
    w_out, w_w = f32(torch.rand(*logits.shape) * 2 - 1), f32(torch.rand(*weights.shape) * 2 - 1)
    loss = (w_out * logits).sum() + (w_w * weights).sum()
    loss.backward()
    gtok, glen = dec.greedy(mem, mlen, init, init_c)
    t = dict(dec.p)
    t.update(memory=mem, memory_len=torch.tensor(mlen), targets=y, targets_len=torch.tensor(ylen))
    if init is not None:
        t["init"] = init
    if init_c is not None:
        t["init_cell"] = init_c
    t.update(out=logits, weights=weights, greedy_tokens=gtok, greedy_len=glen, w_out=w_out,
             w_weights=w_w, grad_memory=mem.grad)
    if init is not None:
        t["grad_init"] = init.grad
    if init_c is not None:
        t["grad_init_cell"] = init_c.grad
    for k, v in dec.p.items():
        t["grad_" + k] = v.grad if v.grad is not None else torch.zeros_like(v)
    opts = ", ".join(f"{k}: {str(v).lower()}" for k, v in cfg.items())
    fixture_io.write(os.path.join(OUT, name + ".txt"), t, "attention_decoder " + opts)


def main():
    os.makedirs(OUT, exist_ok=True)
    pool_case()
    decoder_case("luong_general_feed_lstm_bi",
                 dict(attention="luong", score="general", input_feeding=True, cell="lstm",
                      hidden=5, vocab=7, embed=3), D=6, init_shape=(2, 3), with_c=True, seed=1)
    decoder_case("luong_dot_lstm", dict(attention="luong", score="dot", cell="lstm", hidden=4,
                                        vocab=7, embed=3), D=4, init_shape=(2, 4), seed=2)
    decoder_case("luong_concat_feed_gru",
                 dict(attention="luong", score="concat", input_feeding=True, cell="gru", hidden=5,
                      vocab=7, embed=3, attn_units=6), D=4, seed=3)
    decoder_case("bahdanau_gru", dict(attention="bahdanau", cell="gru", hidden=5, vocab=7,
                                      embed=3, attn_units=4), D=4, init_shape=(1, 5), seed=4)
    decoder_case("bahdanau_lstm_bi", dict(attention="bahdanau", cell="lstm", hidden=5, vocab=7,
                                          embed=3), D=6, init_shape=(2, 3), with_c=True, seed=5)


if __name__ == "__main__":
    main()
