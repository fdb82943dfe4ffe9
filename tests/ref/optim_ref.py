#!/usr/bin/python3
"""Reference values for tests/test_optim.c: torch.optim.AdamW + clip_grad_norm_ + the LR schedules.

Run by ctest as the fixture `ref_optim` (see fixtures.cmake): optim_ref.py OUT.txt

Ten steps of AdamW(betas=(0.9, 0.95), eps=1e-8) on four tensors in two parameter groups (weight decay
0.1 for the matrices, 0.0 for the norm weights), with the gradients clipped to global norm 1.0 and the
learning rate from the warmup + cosine schedule (LambdaLR), all in float64. Start values and gradients
are fp32 numbers (so that C, which holds them in fp32, starts from exactly the same values).

Also the learning rates of every schedule over a longer run, computed from the formulas of
optim/schedule.h written here a second time.

The file is text, one record per line, numbers with 17 significant digits:
  llamac-optim-ref 1
  adamw BETA1 BETA2 EPS WEIGHT_DECAY CLIP
  schedule cosine LR MIN_LR WARMUP TOTAL
  tensor NAME NUMEL DECAY                  (one per tensor, in the order of the flat block)
  init V...                                (the flat block before the first step)
  step T LR NORM GRAD... PARAM...           (T 1-based; NORM is clip_grad_norm_'s total norm before
                                            clipping; PARAM the flat block after the update)
  curve KIND SHAPE LR MIN_LR WARMUP TOTAL DECAY_FRAC N LR_0 ... LR_{N-1}
  end
Checklist: the reader is read_ref() in tests/test_optim.c; change both together.
"""
import math
import os
import sys

import torch

torch.set_default_dtype(torch.float64)


def lr_at(kind, shape, lr, min_lr, warmup, total, decay_frac, step):
    t = step + 1
    if t <= warmup:
        return lr * t / warmup
    if kind == "constant":
        return lr

    def clamp(p):
        return min(max(p, 0.0), 1.0)

    def cos_between(p):
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * p))

    if kind == "cosine":
        span = total - warmup
        return cos_between(clamp((t - warmup) / span) if span > 0 else 1.0)
    d0 = (1 - decay_frac) * total
    span = total - d0
    p = clamp((t - d0) / span) if span > 0 else 1.0
    return cos_between(p) if shape == "cosine" else lr - (lr - min_lr) * p


def f32(x):
    return x.to(torch.float32).to(torch.float64)


def nums(t):
    return " ".join("%.17g" % v for v in t.reshape(-1).tolist())


def main(out_path):
    gen = torch.Generator().manual_seed(1234)
    shapes = [("wq", (12, 8), 1), ("attn_norm", (8,), 0), ("w_down", (8, 20), 1), ("norm", (8,), 0)]
    params = []
    for name, shape, decay in shapes:
        if decay:
            p = f32(torch.randn(shape, generator=gen) * 0.2)
        else:
            p = f32(1.0 + 0.1 * torch.randn(shape, generator=gen))
        params.append(torch.nn.Parameter(p))
    total_n = sum(p.numel() for p in params)

    beta1, beta2, eps, wd, clip = 0.9, 0.95, 1e-8, 0.1, 1.0
    lr, min_lr, warmup, total = 1e-2, 1e-3, 3, 10
    groups = [{"params": [p for p, s in zip(params, shapes) if s[2]], "weight_decay": wd},
              {"params": [p for p, s in zip(params, shapes) if not s[2]], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(beta1, beta2), eps=eps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_at("cosine", "linear", lr, min_lr, warmup, total, 0.0, step) / lr)

    lines = ["llamac-optim-ref 1",
             "adamw %.17g %.17g %.17g %.17g %.17g" % (beta1, beta2, eps, wd, clip),
             "schedule cosine %.17g %.17g %d %d" % (lr, min_lr, warmup, total)]
    for (name, shape, decay), p in zip(shapes, params):
        lines.append("tensor %s %d %d" % (name, p.numel(), decay))
    lines.append("init " + nums(torch.cat([p.detach().reshape(-1) for p in params])))

    # Global gradient norms around the clip threshold: some steps are clipped, some are not.
    scales = [0.3, 3.0, 0.8, 12.0, 0.05, 1.5, 0.6, 5.0, 0.02, 2.0]
    for step in range(total):
        grads = []
        for p in params:
            g = f32(torch.randn(p.shape, generator=gen) * scales[step] / math.sqrt(total_n))
            p.grad = g.clone()
            grads.append(g.reshape(-1))
        step_lr = opt.param_groups[0]["lr"]
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        opt.step()
        sched.step()
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        lines.append("step %d %.17g %.17g %s %s" % (step + 1, step_lr, norm, nums(torch.cat(grads)), nums(flat)))

    # Every schedule over a longer run (the C test compares lr_at with these).
    curves = [("cosine", "linear", 3e-4, 3e-5, 100, 1000, 0.2),
              ("cosine", "linear", 1e-3, 0.0, 0, 50, 0.2),
              ("constant", "linear", 3e-4, 3e-5, 100, 1000, 0.2),
              ("wsd", "linear", 3e-4, 3e-5, 100, 1000, 0.2),
              ("wsd", "cosine", 6e-4, 0.0, 10, 333, 0.1)]
    for kind, shape, c_lr, c_min, c_w, c_total, c_frac in curves:
        n = c_total + 20  # past the end: the floor holds
        vals = [lr_at(kind, shape, c_lr, c_min, c_w, c_total, c_frac, s) for s in range(n)]
        lines.append("curve %s %s %.17g %.17g %d %d %.17g %d %s" % (
            kind, shape, c_lr, c_min, c_w, c_total, c_frac, n, " ".join("%.17g" % v for v in vals)))
    lines.append("end")

    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, out_path)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: optim_ref.py OUT.txt")
    main(sys.argv[1])
