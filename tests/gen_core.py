"""Golden values for the core's built-in losses, optimizers, gradient clipping and learning-rate
schedules, from PyTorch. Run from the source root with Debian's interpreter:

    /usr/bin/python3 tests/gen_core.py

Writes tests/fixtures/core/losses.txt and tests/fixtures/core/optim.txt (read by
tests/test_losses.c and tests/test_optim.c, whose case tables mirror the ones below)."""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_io  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "core")
torch.manual_seed(20240607)
np.random.seed(20240607)


def f32(a):
    return torch.tensor(np.asarray(a, dtype=np.float32))


# ----------------------------------------------------------------- losses
def loss_case(out, name, pred, target, mean_fn, sum_fn, count, correct, lengths=None):
    """mean_fn(pred) is PyTorch's mean-reduced loss; sum_fn(pred) the sum it averages."""
    p = pred.clone().requires_grad_(True)
    mean = mean_fn(p)
    mean.backward()
    total = sum_fn(pred).item()
    assert abs(total / count - mean.item()) <= 1e-5 * max(1.0, abs(mean.item())), name
    out[f"{name}.pred"] = pred
    out[f"{name}.target"] = target
    if lengths is not None:
        out[f"{name}.lengths"] = np.asarray(lengths, dtype=np.float64)
    out[f"{name}.sum"] = [total]
    out[f"{name}.count"] = [count]
    out[f"{name}.correct"] = [correct]
    out[f"{name}.grad"] = p.grad  # d(mean)/d(pred): the core's d_pred with scale = 1/count


def seq_mask(lengths, steps):
    return torch.arange(steps)[None, :] < torch.tensor(lengths)[:, None]


def ce_correct(pred2d, target1d, keep):
    hits = (pred2d.argmax(dim=1) == target1d) & keep
    return float(hits.sum())


def gen_losses():
    out = {}
    # mse: sum of 1/2 ||x_hat - x||^2 over examples, count = batch
    x, y = torch.randn(4, 5), torch.randn(4, 5)
    loss_case(out, "mse_2d", x, y, lambda p: 0.5 * ((p - y) ** 2).sum() / 4,
              lambda p: 0.5 * ((p - y) ** 2).sum(), 4, -1)
    lengths = [4, 2, 1]
    x, y = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    m = seq_mask(lengths, 4)[:, :, None].float()
    loss_case(out, "mse_seq", x, y, lambda p: 0.5 * (((p - y) * m) ** 2).sum() / 3,
              lambda p: 0.5 * (((p - y) * m) ** 2).sum(), 3, -1, lengths)

    # cross_entropy [B,C] / [B]
    def ce2d(name, b, c, ignore=-100, smoothing=0.0, n_ignored=0):
        z = torch.randn(b, c) * 2
        t = torch.randint(0, c, (b,))
        t[:n_ignored] = ignore
        keep = t != ignore
        loss_case(out, name, z, t.float(),
                  lambda p: F.cross_entropy(p, t, ignore_index=ignore, label_smoothing=smoothing),
                  lambda p: F.cross_entropy(p, t, ignore_index=ignore, label_smoothing=smoothing,
                                            reduction="sum"),
                  float(keep.sum()), ce_correct(z, t, keep))

    ce2d("ce_2d", 6, 5)
    ce2d("ce_ignore", 6, 5, n_ignored=2)
    ce2d("ce_smooth", 6, 5, smoothing=0.1)
    ce2d("ce_ignore_smooth", 7, 4, ignore=1, smoothing=0.2, n_ignored=2)
    # a large logit must not overflow
    z = torch.tensor([[80.0, -30.0, 2.0], [-50.0, 60.0, 0.5]])
    t = torch.tensor([1, 1])
    loss_case(out, "ce_large", z, t.float(), lambda p: F.cross_entropy(p, t),
              lambda p: F.cross_entropy(p, t, reduction="sum"), 2.0,
              ce_correct(z, t, torch.ones(2, dtype=torch.bool)))

    # cross_entropy [B,T,C] / [B,T] with lengths: padded steps hold valid classes, so only
    # the lengths can exclude them
    b, steps, c = 3, 4, 5
    lengths = [4, 1, 3]
    z = torch.randn(b, steps, c)
    t = torch.randint(0, c, (b, steps))
    valid = seq_mask(lengths, steps)
    tm = torch.where(valid, t, torch.full_like(t, -100))
    loss_case(out, "ce_seq", z, t.float(),
              lambda p: F.cross_entropy(p.reshape(-1, c), tm.reshape(-1)),
              lambda p: F.cross_entropy(p.reshape(-1, c), tm.reshape(-1), reduction="sum"),
              float(valid.sum()), ce_correct(z.reshape(-1, c), t.reshape(-1), valid.reshape(-1)),
              lengths)

    # cross_entropy [B,C,H,W] / [B,H,W] (pixel-wise), one ignored pixel
    z = torch.randn(2, 4, 3, 3)
    t = torch.randint(0, 4, (2, 3, 3))
    t[1, 2, 0] = -100
    keep = t != -100
    loss_case(out, "ce_img", z, t.float(), lambda p: F.cross_entropy(p, t),
              lambda p: F.cross_entropy(p, t, reduction="sum"), float(keep.sum()),
              float(((z.argmax(dim=1) == t) & keep).sum()))

    # bce from logits, mean over elements
    x = torch.randn(4, 3) * 3
    x[0, 0], x[1, 1] = 40.0, -40.0
    y = torch.randint(0, 2, (4, 3)).float()
    loss_case(out, "bce", x, y, lambda p: F.binary_cross_entropy_with_logits(p, y),
              lambda p: F.binary_cross_entropy_with_logits(p, y, reduction="sum"), 12.0,
              float(((x > 0).float() == y).sum()))
    x = torch.randn(4, 3) * 2
    y = torch.rand(4, 3)
    pw = torch.tensor(2.5)
    loss_case(out, "bce_pos", x, y,
              lambda p: F.binary_cross_entropy_with_logits(p, y, pos_weight=pw),
              lambda p: F.binary_cross_entropy_with_logits(p, y, pos_weight=pw, reduction="sum"),
              12.0, -1)
    fixture_io.write(os.path.join(OUT, "losses.txt"), out,
                     "losses vs PyTorch " + torch.__version__ + " (tests/gen_core.py)")


# ----------------------------------------------------------------- optimizers
STEPS = 5
SHAPES = [(3, 4), (5,)]

# name, torch class, kwargs; test_optim.c holds the same cases as option strings
OPTIM_CASES = [
    ("sgd", torch.optim.SGD, dict(lr=0.1)),
    ("sgd_momentum", torch.optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("sgd_nesterov", torch.optim.SGD, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    ("adam", torch.optim.Adam, dict()),
    ("adam_wd_amsgrad", torch.optim.Adam, dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1, amsgrad=True)),
    ("adamw", torch.optim.AdamW, dict(lr=0.01)),
    ("adamw_amsgrad", torch.optim.AdamW, dict(lr=0.02, weight_decay=0.5, amsgrad=True, eps=1e-6)),
    ("rmsprop", torch.optim.RMSprop, dict()),
    ("rmsprop_centered", torch.optim.RMSprop, dict(lr=0.01, alpha=0.9, momentum=0.9, centered=True, weight_decay=0.1)),
    ("adagrad", torch.optim.Adagrad, dict()),
    ("adagrad_decay", torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.1, weight_decay=0.1, initial_accumulator_value=0.1)),
]
# per-step learning rates of the "lr_vary" cases (as a schedule would set them)
LR_VARY = [1e-3, 2e-3, 5e-4, 1e-3, 3e-3]
OPTIM_CASES.append(("adam_lr_vary", torch.optim.Adam, dict(lr=LR_VARY[0])))


def gen_optim():
    out = {}
    init = [torch.randn(*s) for s in SHAPES]
    grads = [[torch.randn(*s) * 0.5 for s in SHAPES] for _ in range(STEPS)]
    for j, p in enumerate(init):
        out[f"init.p{j}"] = p
    for k in range(STEPS):
        for j in range(len(SHAPES)):
            out[f"grad{k + 1}.p{j}"] = grads[k][j]
    for name, cls, kw in OPTIM_CASES:
        params = [torch.nn.Parameter(p.clone()) for p in init]
        opt = cls(params, **kw)
        lrs = []
        for k in range(STEPS):
            if name.endswith("lr_vary"):
                opt.param_groups[0]["lr"] = LR_VARY[k]
            lrs.append(opt.param_groups[0]["lr"])
            for j, p in enumerate(params):
                p.grad = grads[k][j].clone()
            opt.step()
            for j, p in enumerate(params):
                out[f"{name}.step{k + 1}.p{j}"] = p.detach().clone()
        out[f"{name}.lr"] = lrs
        for j, p in enumerate(params):
            for key, v in opt.state[p].items():
                if torch.is_tensor(v) and v.shape == p.shape:
                    out[f"{name}.state.{key}.p{j}"] = v.clone()

    # clip_grad_norm_ (clipping and not) and clip_grad_value_
    for name, max_norm in (("clip_norm", 1.0), ("clip_norm_noop", 100.0)):
        params = [torch.nn.Parameter(p.clone()) for p in init]
        for j, p in enumerate(params):
            p.grad = grads[0][j].clone() * 2
            out[f"{name}.in.p{j}"] = p.grad.clone()
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        out[f"{name}.norm"] = [norm.item()]
        for j, p in enumerate(params):
            out[f"{name}.out.p{j}"] = p.grad
    params = [torch.nn.Parameter(p.clone()) for p in init]
    for j, p in enumerate(params):
        p.grad = grads[1][j].clone()
        out[f"clip_value.in.p{j}"] = p.grad.clone()
    torch.nn.utils.clip_grad_value_(params, 0.3)
    for j, p in enumerate(params):
        out[f"clip_value.out.p{j}"] = p.grad

    # learning-rate schedules: lr during each of 12 epochs, stepped once per epoch
    epochs = 12
    val = [1.0, 0.8, 0.79, 0.795, 0.7, 0.7, 0.699, 0.71, 0.72, 0.5, 0.5, 0.5]
    out["plateau.val_loss"] = val
    sched_cases = [
        ("sched_step", lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
        ("sched_exponential", lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.8)),
        ("sched_cosine", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=5, eta_min=0.001)),
        ("sched_cosine_epochs", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=epochs)),
        ("sched_plateau", lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(
            o, mode="min", factor=0.5, patience=1, threshold=0.01, min_lr=0.03)),
    ]
    for name, make in sched_cases:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = make(opt)
        lrs = []
        for e in range(epochs):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            if name == "sched_plateau":
                sched.step(val[e])
            else:
                sched.step()
        out[f"{name}.lr"] = lrs
    fixture_io.write(os.path.join(OUT, "optim.txt"), out,
                     "optimizers, clipping and schedules vs PyTorch " + torch.__version__ +
                     " (tests/gen_core.py)")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    gen_losses()
    gen_optim()
