#!/usr/bin/env python3
"""Golden values for AdamW + global-norm clipping + warmup/cosine LR (specs.md section 6).

Regenerate (from the repository root):

    /work/venv/bin/python tests/reference/optim_reference.py

writes tests/fixtures/optim/adamw_clip.json (``--out FILE`` writes elsewhere).

Setup (no model): parameters w1 [3,4] (weight_decay 0.1) and w2 [5] (weight_decay 0.0),
torch.optim.AdamW(betas=(0.9, 0.95), eps=1e-8, foreach=False), 6 steps. Step t:
  1. grads <- fixed random tensors grads[t] (scaled per step so that some steps are
     clipped and some are not)
  2. pre_clip_norms[t] = torch.nn.utils.clip_grad_norm_([w1, w2], max_norm=1.0)
     (global norm; g *= min(1, max_norm / (norm + 1e-6)))
  3. lr = lrs[t] from get_lr(t) (below), set on both param groups
  4. optimizer.step(); params[t] = parameters after the step

All tensors are float32; JSON floats are the float32 values widened to double (exact).
A float64 re-implementation of the spec formulas is checked against torch (rel 1e-5).

JSON schema (adamw_clip.json):
  description     str
  optimizer       {"type": "AdamW", "betas": [0.9, 0.95], "eps": 1e-8,
                   "weight_decay": {"w1": 0.1, "w2": 0.0}, "amsgrad": false,
                   "update": str (formula)}
  clip            {"type": "global_norm", "max_norm": 1.0, "eps": 1e-6, "formula": str}
  schedule        {"type": "warmup_cosine", "max_lr": 0.01, "min_lr": 0.001,
                   "warmup": 2, "total": 6, "formula": str}
  n_steps         6
  param_names     ["w1", "w2"]
  shapes          {"w1": [3, 4], "w2": [5]}
  params_init     {"w1": [[4 floats] x3], "w2": [5 floats]}
  lrs             [6 floats]                     lr used at step t = 0..5
  grads           [6 x {"w1": [[..]], "w2": [..]}]   raw gradients, before clipping
  pre_clip_norms  [6 floats]                     total norm returned by clip_grad_norm_
  clip_coefs      [6 floats]                     min(1, 1.0 / (norm + 1e-6))
  clipped_grads   [6 x {"w1", "w2"}]             gradients actually fed to AdamW
  params          [6 x {"w1", "w2"}]             parameters after step t
  exp_avg         [6 x {"w1", "w2"}]             AdamW first moment after step t
  exp_avg_sq      [6 x {"w1", "w2"}]             AdamW second moment after step t
"""

import argparse
import json
import math
import os

import torch

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "optim", "adamw_clip.json")

SEED = 2024
N_STEPS = 6
MAX_LR, MIN_LR, WARMUP, TOTAL = 1e-2, 1e-3, 2, 6
BETAS, EPS = (0.9, 0.95), 1e-8
WD = {"w1": 0.1, "w2": 0.0}
MAX_NORM = 1.0
# per-step gradient scales: randn over 17 entries has norm ~4, so these give pre-clip
# norms on both sides of max_norm = 1
GRAD_SCALES = [0.5, 0.05, 0.3, 0.02, 1.0, 0.1]

SCHEDULE_FORMULA = (
    "def get_lr(it):  # it = 0-based step, max_lr=1e-2, min_lr=1e-3, warmup=2, total=6\n"
    "    if it < warmup: return max_lr * (it + 1) / warmup\n"
    "    if it > total: return min_lr\n"
    "    ratio = (it - warmup) / (total - warmup)\n"
    "    coeff = 0.5 * (1 + cos(pi * ratio))\n"
    "    return min_lr + coeff * (max_lr - min_lr)"
)
ADAMW_FORMULA = (
    "t = step + 1; p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; "
    "bc1 = 1 - b1^t; bc2 = 1 - b2^t; p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps)"
)
CLIP_FORMULA = (
    "n = sqrt(sum_i ||g_i||^2) over w1 and w2 together; c = min(max_norm / (n + 1e-6), 1); "
    "g_i *= c (always multiplied, c = 1 when not clipped)"
)


def get_lr(it, max_lr=MAX_LR, min_lr=MIN_LR, warmup=WARMUP, total=TOTAL):
    if it < warmup:
        return max_lr * (it + 1) / warmup
    if it > total:
        return min_lr
    ratio = (it - warmup) / (total - warmup)
    coeff = 0.5 * (1 + math.cos(math.pi * ratio))
    return min_lr + coeff * (max_lr - min_lr)


def tl(t):
    return t.detach().to(torch.float32).tolist()


def f64_reference(params_init, grads, lrs):
    """Spec formulas in float64, to cross-check torch."""
    p = {k: v.double().clone() for k, v in params_init.items()}
    m = {k: torch.zeros_like(v) for k, v in p.items()}
    v2 = {k: torch.zeros_like(v) for k, v in p.items()}
    out, norms = [], []
    for t in range(N_STEPS):
        g = {k: grads[t][k].double() for k in p}
        n = math.sqrt(sum(float(x.pow(2).sum()) for x in g.values()))
        c = min(MAX_NORM / (n + 1e-6), 1.0)
        g = {k: x * c for k, x in g.items()}
        lr, step = lrs[t], t + 1
        bc1, bc2 = 1 - BETAS[0] ** step, 1 - BETAS[1] ** step
        for k in p:
            p[k] *= 1 - lr * WD[k]
            m[k] = BETAS[0] * m[k] + (1 - BETAS[0]) * g[k]
            v2[k] = BETAS[1] * v2[k] + (1 - BETAS[1]) * g[k] ** 2
            p[k] -= (lr / bc1) * m[k] / (v2[k].sqrt() / math.sqrt(bc2) + EPS)
        out.append({k: x.clone() for k, x in p.items()})
        norms.append(n)
    return out, norms


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    torch.manual_seed(SEED)
    w1 = torch.randn(3, 4)
    w2 = torch.randn(5)
    grads = [
        {"w1": torch.randn(3, 4) * s, "w2": torch.randn(5) * s} for s in GRAD_SCALES
    ]
    params_init = {"w1": w1.clone(), "w2": w2.clone()}

    w1 = torch.nn.Parameter(w1)
    w2 = torch.nn.Parameter(w2)
    named = {"w1": w1, "w2": w2}
    opt = torch.optim.AdamW(
        [{"params": [w1], "weight_decay": WD["w1"]}, {"params": [w2], "weight_decay": WD["w2"]}],
        lr=MAX_LR, betas=BETAS, eps=EPS, foreach=False, amsgrad=False,
    )

    lrs, norms, coefs, clipped, params, m1, m2 = [], [], [], [], [], [], []
    for t in range(N_STEPS):
        for k, p in named.items():
            p.grad = grads[t][k].clone()
        n = torch.nn.utils.clip_grad_norm_([w1, w2], max_norm=MAX_NORM)
        lr = get_lr(t)
        for group in opt.param_groups:
            group["lr"] = lr
        clipped.append({k: tl(p.grad) for k, p in named.items()})
        opt.step()
        lrs.append(lr)
        norms.append(float(n))
        coefs.append(min(MAX_NORM / (float(n) + 1e-6), 1.0))
        params.append({k: tl(p) for k, p in named.items()})
        m1.append({k: tl(opt.state[p]["exp_avg"]) for k, p in named.items()})
        m2.append({k: tl(opt.state[p]["exp_avg_sq"]) for k, p in named.items()})

    # cross-check with a float64 implementation of the spec
    ref_params, ref_norms = f64_reference(params_init, grads, lrs)
    for t in range(N_STEPS):
        assert abs(ref_norms[t] - norms[t]) <= 1e-5 * ref_norms[t], (t, ref_norms[t], norms[t])
        for k in named:
            got = torch.tensor(params[t][k], dtype=torch.float64)
            err = (got - ref_params[t][k]).abs().max().item()
            assert err <= 1e-5 * max(1.0, ref_params[t][k].abs().max().item()), (t, k, err)

    out = {
        "description": "AdamW + global-norm clip (1.0) + linear-warmup/cosine LR on two free "
                       "parameters with fixed gradients; torch "
                       f"{torch.__version__.split('+')[0]} float32, CPU, foreach=False. Per step t: set "
                       "grads[t], clip (pre_clip_norms[t]), lr = lrs[t], AdamW step -> params[t].",
        "optimizer": {"type": "AdamW", "betas": list(BETAS), "eps": EPS, "weight_decay": WD,
                      "amsgrad": False, "update": ADAMW_FORMULA},
        "clip": {"type": "global_norm", "max_norm": MAX_NORM, "eps": 1e-6, "formula": CLIP_FORMULA},
        "schedule": {"type": "warmup_cosine", "max_lr": MAX_LR, "min_lr": MIN_LR,
                     "warmup": WARMUP, "total": TOTAL, "formula": SCHEDULE_FORMULA},
        "n_steps": N_STEPS,
        "param_names": ["w1", "w2"],
        "shapes": {"w1": [3, 4], "w2": [5]},
        "params_init": {k: tl(v) for k, v in params_init.items()},
        "lrs": lrs,
        "grads": [{k: tl(v) for k, v in g.items()} for g in grads],
        "pre_clip_norms": norms,
        "clip_coefs": coefs,
        "clipped_grads": clipped,
        "params": params,
        "exp_avg": m1,
        "exp_avg_sq": m2,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}")
    print("lrs           ", [f"{x:.6g}" for x in lrs])
    print("pre-clip norms", [f"{x:.6g}" for x in norms])
    print("clipped steps ", [x > MAX_NORM for x in norms])


if __name__ == "__main__":
    main()
