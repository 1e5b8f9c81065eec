#!/usr/bin/python3
"""Golden values for the conv and autoencoder plugins, from PyTorch.

Run with Debian's python3-torch:  /usr/bin/python3 tests/gen_conv.py
Writes tests/fixtures/conv/<case>.txt, one file per case, read by tests/test_conv.c and
tests/test_autoencoder.c. Each file holds, for loss = sum_k <dout_k, out_k>:
  in0, in1 ...        the layer's inputs (in1 of maxunpool2d: the indices, as floats)
  param:NAME          every parameter and buffer, under plexus's (= PyTorch's) name
  out0, out1 ...      the outputs
  dout0 ...           the random output weights of the loss (= dLoss/dout_k)
  din0 ...            dLoss/din_i for the differentiable inputs
  dparam:NAME         dLoss/dparam for the trainable parameters
  after:NAME          buffers after the forward (batchnorm2d's running statistics)
The layer options of each case are repeated in the C tests' tables, by case name.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_io  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "conv")
torch.manual_seed(20240611)


def distinct(*shape):
    """Distinct values (a shuffled grid, spacing 0.05): max pooling has no ties."""
    n = 1
    for d in shape:
        n *= d
    return (torch.randperm(n).double() * 0.05 - 0.025 * n).float().reshape(shape)


def save(name, module, inputs, outputs_fn, comment, grad_inputs=None, buffers=(), train=True):
    """Run module on inputs (list), differentiate loss = sum <dout_k, out_k>."""
    t = {}
    ins = [x.clone().requires_grad_(grad_inputs is None or i in grad_inputs)
           if x.is_floating_point() else x for i, x in enumerate(inputs)]
    for i, x in enumerate(inputs):
        t[f"in{i}"] = x.float()
    if module is not None:
        module.train(train)
        for pname, p in module.named_parameters():
            t[f"param:{pname}"] = p
        for bname, b in module.named_buffers():
            t[f"param:{bname}"] = b.clone().float()
    outs = outputs_fn(*ins)
    if not isinstance(outs, tuple):
        outs = (outs,)
    loss = 0
    douts = []
    for k, o in enumerate(outs):
        t[f"out{k}"] = o.float()
        if o.is_floating_point() and o.requires_grad:
            g = torch.randn_like(o)
            douts.append((k, g))
            loss = loss + (o * g).sum()
    for k, g in douts:
        t[f"dout{k}"] = g
    loss.backward()
    for i, x in enumerate(ins):
        if x.is_floating_point() and x.requires_grad:
            t[f"din{i}"] = x.grad
    if module is not None:
        for pname, p in module.named_parameters():
            t[f"dparam:{pname}"] = p.grad
        for bname in buffers:
            t[f"after:{bname}"] = dict(module.named_buffers())[bname].float()
    fixture_io.write(os.path.join(OUT, name + ".txt"), t, comment)
    print(name)


def conv2d(name, B, C, H, W, out, k, s=1, p=0, d=1, g=1, bias=True):
    m = torch.nn.Conv2d(C, out, k, stride=s, padding=p, dilation=d, groups=g, bias=bias)
    x = torch.randn(B, C, H, W)
    save(name, m, [x], m, f"torch.nn.Conv2d({C}, {out}, {k}, stride={s}, padding={p}, "
         f"dilation={d}, groups={g}, bias={bias}) on {list(x.shape)}")


def convt(name, B, C, H, W, out, k, s=1, p=0, op=0, d=1, g=1, bias=True):
    m = torch.nn.ConvTranspose2d(C, out, k, stride=s, padding=p, output_padding=op,
                                 dilation=d, groups=g, bias=bias)
    x = torch.randn(B, C, H, W)
    save(name, m, [x], m, f"torch.nn.ConvTranspose2d({C}, {out}, {k}, stride={s}, padding={p}, "
         f"output_padding={op}, dilation={d}, groups={g}, bias={bias}) on {list(x.shape)}")


def maxpool(name, B, C, H, W, k, s=None, p=0):
    x = distinct(B, C, H, W)
    save(name, None, [x], lambda x: F.max_pool2d(x, k, s, p, return_indices=True),
         f"F.max_pool2d(x, {k}, {s}, {p}, return_indices=True) on {list(x.shape)}, "
         "distinct values (no ties)")


def avgpool(name, B, C, H, W, k, s=None, p=0, incl=True):
    x = torch.randn(B, C, H, W)
    save(name, None, [x], lambda x: F.avg_pool2d(x, k, s, p, count_include_pad=incl),
         f"F.avg_pool2d(x, {k}, {s}, {p}, count_include_pad={incl}) on {list(x.shape)}")


def unpool(name, B, C, H, W, k, s=None, p=0):
    x = distinct(B, C, H, W)
    _, idx = F.max_pool2d(x, k, s, p, return_indices=True)
    v = torch.randn(idx.shape)
    save(name, None, [v, idx.float()],
         lambda v, i: F.max_unpool2d(v, i.long(), k, s, p, output_size=[H, W]),
         f"F.max_unpool2d(v, indices of F.max_pool2d(x, {k}, {s}, {p}) on {list(x.shape)}, "
         f"output_size=[{H}, {W}])", grad_inputs={0})


def upsample(name, B, C, H, W, scale, mode):
    x = torch.randn(B, C, H, W)
    kw = {} if mode == "nearest" else {"align_corners": False}
    save(name, None, [x], lambda x: F.interpolate(x, scale_factor=scale, mode=mode, **kw),
         f"F.interpolate(x, scale_factor={scale}, mode={mode!r}) on {list(x.shape)}")


def batchnorm(name, train):
    m = torch.nn.BatchNorm2d(3, eps=1e-5, momentum=0.1)
    with torch.no_grad():
        m.weight.copy_(torch.rand(3) + 0.5)
        m.bias.copy_(torch.randn(3))
        m.running_mean.copy_(torch.randn(3))
        m.running_var.copy_(torch.rand(3) + 0.5)
        m.num_batches_tracked.fill_(5)
    x = torch.randn(4, 3, 5, 6) * 2 + 1
    save(name, m, [x], m, f"torch.nn.BatchNorm2d(3) in {'train' if train else 'eval'} mode on "
         f"{list(x.shape)}", buffers=("running_mean", "running_var", "num_batches_tracked"),
         train=train)


class AE(torch.nn.Module):
    """plexus's autoencoder node in PyTorch: enc{k}/dec{k} nn.Linear layers."""

    def __init__(self, sizes, act, out_act, tied):
        super().__init__()
        L = len(sizes) - 1
        self.L, self.act, self.out_act, self.tied = L, act, out_act, tied
        for k in range(L):
            setattr(self, f"enc{k}", torch.nn.Linear(sizes[k], sizes[k + 1]))
        for k in range(L):
            lin = torch.nn.Linear(sizes[L - k], sizes[L - k - 1])
            if tied:
                del lin.weight
                lin.weight = None
            setattr(self, f"dec{k}", lin)

    def forward(self, x):
        h = x.reshape(x.shape[0], -1)
        code = None
        for m in range(2 * self.L):
            if m < self.L:
                lin = getattr(self, f"enc{m}")
                z = lin(h)
            else:
                k = m - self.L
                lin = getattr(self, f"dec{k}")
                w = getattr(self, f"enc{self.L - 1 - k}").weight.t() if self.tied else lin.weight
                z = F.linear(h, w, lin.bias)
            f = self.out_act if m == 2 * self.L - 1 else self.act
            h = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
                 "none": lambda z: z}[f](z)
            if m == self.L - 1:
                code = h
        return h.reshape(x.shape), code


def autoencoder(name, shape, sizes, act, out_act, tied):
    m = AE(sizes, act, out_act, tied)
    x = torch.rand(*shape)
    save(name, m, [x], m, f"autoencoder sizes={sizes} activation={act} "
         f"output_activation={out_act} tied={tied} on {list(x.shape)}")


def main():
    os.makedirs(OUT, exist_ok=True)
    conv2d("conv2d_basic", 2, 3, 7, 6, 4, 3)
    conv2d("conv2d_stride2_pad1", 2, 3, 8, 7, 5, 3, s=2, p=1)
    conv2d("conv2d_dilation2_pad2", 2, 2, 9, 8, 3, 3, p=2, d=2)
    conv2d("conv2d_groups2", 2, 4, 6, 6, 6, 3, p=1, g=2)
    conv2d("conv2d_depthwise_rect_nobias", 2, 3, 7, 9, 3, (2, 3), s=(2, 1), p=(1, 0), g=3,
           bias=False)
    conv2d("conv2d_1x1_stride3", 3, 5, 7, 7, 2, 1, s=3)
    convt("convt_basic", 2, 3, 4, 5, 2, 3)
    convt("convt_s2_p1_op1", 2, 4, 5, 5, 3, 3, s=2, p=1, op=1)
    convt("convt_k2_s2", 2, 3, 4, 3, 2, 2, s=2)
    convt("convt_k4_s3_p1_op2", 2, 2, 3, 4, 3, 4, s=3, p=1, op=2)
    convt("convt_d2_p1_op1", 2, 3, 5, 4, 2, 3, p=1, op=1, d=2)
    convt("convt_groups2_s2", 2, 4, 4, 4, 6, 3, s=2, p=1, op=1, g=2)
    convt("convt_rect_nobias", 2, 3, 4, 5, 2, (3, 2), s=(2, 1), p=(1, 0), op=(1, 0),
          bias=False)
    maxpool("maxpool_k2_odd", 2, 3, 7, 7, 2)
    maxpool("maxpool_k3_s2_p1", 2, 2, 8, 9, 3, 2, 1)
    maxpool("maxpool_rect", 2, 2, 6, 7, (2, 3), (1, 2), (1, 1))
    avgpool("avgpool_k3_s2_p1_incl", 2, 2, 8, 9, 3, 2, 1, True)
    avgpool("avgpool_k3_s2_p1_excl", 2, 2, 8, 9, 3, 2, 1, False)
    avgpool("avgpool_k2", 2, 3, 6, 7, 2)
    unpool("maxunpool_k2_odd", 2, 3, 7, 7, 2)
    unpool("maxunpool_k3_s2_p1", 2, 2, 8, 9, 3, 2, 1)
    upsample("upsample_nearest_2", 2, 3, 4, 5, 2, "nearest")
    upsample("upsample_nearest_3", 2, 2, 3, 4, 3, "nearest")
    upsample("upsample_bilinear_2", 2, 3, 4, 5, 2, "bilinear")
    upsample("upsample_bilinear_3", 2, 2, 3, 4, 3, "bilinear")
    batchnorm("batchnorm_train", True)
    batchnorm("batchnorm_eval", False)
    autoencoder("ae_relu_untied", (3, 12), [12, 8, 4], "relu", "sigmoid", False)
    autoencoder("ae_tanh_tied_image", (3, 1, 3, 4), [12, 7, 5, 3], "tanh", "none", True)
    autoencoder("ae_sigmoid_deep", (4, 10), [10, 8, 6, 4, 2], "sigmoid", "sigmoid", False)


if __name__ == "__main__":
    main()
