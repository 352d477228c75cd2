#!/usr/bin/env python3
"""Golden fixtures for Kiln's RWKV-7 "Goose" (x070) blocks (specs.md section 5).

Regenerate (from the repository root):

    /work/venv/bin/python tests/reference/rwkv7_parity.py

writes tests/fixtures/rwkv7/tiny/{config.json, model.safetensors, golden.json,
grads.safetensors} and tests/fixtures/rwkv7/wkv/wkv.safetensors.

Reference: a plain-torch RWKV-7 written from BlinkDL/RWKV-LM
``RWKV-v7/rwkv_v7_demo.py`` (the non-CUDA ``RWKV7_OP`` per-timestep loop), one leaf
tensor per weight, float32, autograd through the WKV loop. Gradients are autograd's.

Oracle (self-check on every run, asserted):
  (a) pip ``rwkv`` 0.8.32 (``RWKV_V7_ON=1``, strategy ``cpu fp32``, class
      ``RWKV_x070``) loads the weights from a temporary ``.pth`` (official tensor
      names) and reproduces every batch row's logits in GPT mode
      (``forward(tokens, None, full_output=True)``) within 1e-5;
  (b) the same package in RNN mode (one token per call, carrying the state)
      reproduces them too;
  (c) a float64 copy of the reference: central finite differences of the loss along
      a random direction agree with <grad, direction>;
  (d) WKV kernel: the loop agrees with an einsum formulation, and
      ``torch.autograd.gradcheck`` passes on it in float64.

Config (tiny): vocab 67, n_embd C = 32, head_size N = 16 (H = 2 heads), 3 layers,
dim_ffn 128, LoRA ranks decay 8, aaa 8, mv 4, gate 8; LayerNorm eps 1e-5, ln_x
GroupNorm(H) eps 64e-5; untied head; tokens [2, 11]. The weights are random (not the
train_temp init, which zeroes many matrices) so that every path carries signal:
mixing coefficients x_* ~ U(0,1), w0 ~ U(-3,1), LoRA factors ~ N(0, s/sqrt(fan_in)),
k_k ~ 0.7+0.2 randn, k_a ~ 1+0.2 randn, r_k ~ 0.3 randn, a0/v0 ~ 0.5 randn, norm
gains 1+0.1 randn, norm biases 0.1 randn, linears ~ N(0, 1/sqrt(fan_in)),
emb ~ N(0,1), head ~ N(0, 1/sqrt(C)).

Model (per specs.md section 5; S is N x N per head, rows = value index i,
cols = key index j):
    x = ln0(emb[tokens])                                   (layer 0 only)
    per layer: x += att(ln1 x); x += ffn(ln2 x);  logits = head(ln_out x)
    att: xx = shift(x) - x (shift: previous token, zeros at t = 0);
         x_m = x + xx * x_m  for m in r,w,k,v,a,g
         r, k, v = receptance(x_r), key(x_k), value(x_v)
         w = -softplus(-(w0 + tanh(x_w @ w1) @ w2)) - 0.5 ; decay = exp(-exp(w))
         layer 0: v_first = v ; else v += (v_first - v) * sigmoid(v0 + (x_v @ v1) @ v2)
         a = sigmoid(a0 + (x_a @ a1) @ a2) ; g = sigmoid(x_g @ g1) @ g2
         kk = normalize_per_head(k * k_k) (eps 1e-12) ; k = k * (1 + (a - 1) * k_a)
         S_t = S_{t-1} * decay_t[None, :] + (S_{t-1} @ -kk_t) (kk_t * a_t)^T + v_t k_t^T
         o_t = S_t @ r_t
         o = GroupNorm(H, eps 64e-5)(o) + (sum_head r * k * r_k) * v
         out = output(o * g)
    ffn: xx = shift(x) - x ; out = value(relu(key(x + xx * x_k)) ** 2)

Files:
  config.json: vocab_size, n_embd, n_layer, head_size, dim_ffn, d_decay_lora,
    d_aaa_lora, d_mv_lora, d_gate_lora, layer_norm_eps, ln_x_eps.
  model.safetensors: float32, official .pth names and shapes:
    emb.weight [V,C]; blocks.0.ln0.{weight,bias} [C]; blocks.{i}.ln{1,2}.{weight,bias} [C];
    blocks.{i}.att.{x_r,x_w,x_k,x_v,x_a,x_g,w0,a0,k_k,k_a} [1,1,C];
    att.w1 [C,Dw], att.w2 [Dw,C], att.a1 [C,Da], att.a2 [Da,C],
    att.v0 [1,1,C], att.v1 [C,Dv], att.v2 [Dv,C] (layers i > 0 only),
    att.g1 [C,Dg], att.g2 [Dg,C], att.r_k [H,N],
    att.{receptance,key,value,output}.weight [C,C] (torch Linear [out,in]),
    att.ln_x.{weight,bias} [C]; ffn.x_k [1,1,C], ffn.key.weight [F,C],
    ffn.value.weight [C,F]; ln_out.{weight,bias} [C]; head.weight [V,C].
  golden.json: tokens [2][11], logits_shape, logits [2][11][67], loss (mean
    cross-entropy of logits[:, :-1] vs tokens[:, 1:]), grad_norms {name: L2 norm}.
  grads.safetensors: d loss / d tensor for every tensor (same names and shapes).
  ../wkv/wkv.safetensors (WKV kernel alone, B=2, T=9, H=2, N=8, all [2, 9, 16]):
    r, w (per-step decay factor in (0,1), i.e. exp(-exp(.)) already applied), k, v,
    a, b (the rank-1 term is (S @ a) b^T; drawn like the model's a = -kk,
    b = kk * alpha but treated as independent inputs), y = wkv(r,w,k,v,a,b) (zero
    initial state), gy (random cotangent), and d/d{r,w,k,v,a,b} of sum(y * gy)
    as dr, dw, dk, dv, da, db.
"""

import argparse
import json
import math
import os
import sys
import tempfile

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "rwkv7")
BATCH, SEQ, TOKEN_SEED, MODEL_SEED, WKV_SEED = 2, 11, 4321, 707, 99

CONFIG = dict(
    vocab_size=67,
    n_embd=32,
    n_layer=3,
    head_size=16,
    dim_ffn=128,
    d_decay_lora=8,
    d_aaa_lora=8,
    d_mv_lora=4,
    d_gate_lora=8,
    layer_norm_eps=1e-5,
    ln_x_eps=64e-5,
)


# ----------------------------------------------------------------------------- model


def wkv7(r, w, k, v, a, b, head_size):
    """Per-timestep RWKV-7 WKV (demo's RWKV7_OP without the exp(-exp()) step).

    r, w, k, v, a, b: [B, T, C]; w is the decay factor. Zero initial state.
    S = S * w[None, :] + (S @ a) b^T + v k^T ; y = S @ r.  Returns [B, T, C].
    """
    bsz, t_len, c = r.shape
    n = head_size
    h = c // n
    sh = lambda x: x.view(bsz, t_len, h, n)
    r, w, k, v, a, b = map(sh, (r, w, k, v, a, b))
    state = torch.zeros(bsz, h, n, n, dtype=r.dtype)
    ys = []
    for t in range(t_len):
        state = (state * w[:, t, :, None, :]
                 + (state @ a[:, t, :, :, None]) @ b[:, t, :, None, :]
                 + v[:, t, :, :, None] @ k[:, t, :, None, :])
        ys.append((state @ r[:, t, :, :, None]).squeeze(-1))
    return torch.stack(ys, 1).reshape(bsz, t_len, c)


def wkv7_einsum(r, w, k, v, a, b, head_size):
    """Same recurrence written with einsum (independent formulation for the self-check)."""
    bsz, t_len, c = r.shape
    n = head_size
    h = c // n
    sh = lambda x: x.reshape(bsz, t_len, h, n)
    r, w, k, v, a, b = map(sh, (r, w, k, v, a, b))
    state = torch.zeros(bsz, h, n, n, dtype=r.dtype)
    out = []
    for t in range(t_len):
        sab = torch.einsum("bhik,bhk,bhj->bhij", state, a[:, t], b[:, t])
        state = state * w[:, t, :, None, :] + sab + torch.einsum("bhj,bhi->bhij", k[:, t], v[:, t])
        out.append(torch.einsum("bhj,bhij->bhi", r[:, t], state))
    return torch.stack(out, 1).reshape(bsz, t_len, c)


def shift(x):
    """Previous token along T (zeros at t = 0)."""
    return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)


def reference_forward(w, cfg, tokens):
    """Plain-torch RWKV-7 (demo math). w: {official name: tensor}. Returns logits [B,T,V]."""
    c, n = cfg["n_embd"], cfg["head_size"]
    h = c // n
    eps, eps_x = cfg["layer_norm_eps"], cfg["ln_x_eps"]
    bsz, t_len = tokens.shape
    ln = lambda x, p: F.layer_norm(x, (c,), w[p + ".weight"], w[p + ".bias"], eps)

    x = ln(w["emb.weight"][tokens], "blocks.0.ln0")
    v_first = None
    for i in range(cfg["n_layer"]):
        p = lambda s: w[f"blocks.{i}.att.{s}"]
        # ---- time mix
        xa_in = ln(x, f"blocks.{i}.ln1")
        xx = shift(xa_in) - xa_in
        xr, xw, xk, xv, xa, xg = (xa_in + xx * p(m) for m in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"))
        r = xr @ p("receptance.weight").T
        wl = -F.softplus(-(p("w0") + torch.tanh(xw @ p("w1")) @ p("w2"))) - 0.5
        k = xk @ p("key.weight").T
        v = xv @ p("value.weight").T
        if i == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(p("v0") + (xv @ p("v1")) @ p("v2"))
        a = torch.sigmoid(p("a0") + (xa @ p("a1")) @ p("a2"))
        g = torch.sigmoid(xg @ p("g1")) @ p("g2")
        kk = F.normalize((k * p("k_k")).view(bsz, t_len, h, n), dim=-1, p=2.0).view(bsz, t_len, c)
        k = k * (1 + (a - 1) * p("k_a"))
        o = wkv7(r, torch.exp(-torch.exp(wl)), k, v, -kk, kk * a, n)
        o = F.group_norm(o.reshape(bsz * t_len, c), h, p("ln_x.weight"), p("ln_x.bias"), eps_x)
        o = o.view(bsz, t_len, c)
        bonus = (r.view(bsz, t_len, h, n) * k.view(bsz, t_len, h, n) * p("r_k")).sum(-1, keepdim=True)
        o = o + (bonus * v.view(bsz, t_len, h, n)).view(bsz, t_len, c)
        x = x + (o * g) @ p("output.weight").T
        # ---- channel mix
        xf = ln(x, f"blocks.{i}.ln2")
        xk = xf + (shift(xf) - xf) * w[f"blocks.{i}.ffn.x_k"]
        kf = torch.relu(xk @ w[f"blocks.{i}.ffn.key.weight"].T) ** 2
        x = x + kf @ w[f"blocks.{i}.ffn.value.weight"].T
    x = ln(x, "ln_out")
    return x @ w["head.weight"].T


def lm_loss(logits, tokens):
    v = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, v), tokens[:, 1:].reshape(-1))


# ----------------------------------------------------------------------------- weights


def make_weights(cfg, seed):
    """Random weights exercising every path, in official .pth order. float32."""
    g = torch.Generator().manual_seed(seed)
    c, n, f, vsz = cfg["n_embd"], cfg["head_size"], cfg["dim_ffn"], cfg["vocab_size"]
    h = c // n
    dw, da, dv, dg = cfg["d_decay_lora"], cfg["d_aaa_lora"], cfg["d_mv_lora"], cfg["d_gate_lora"]
    randn = lambda *s: torch.randn(*s, generator=g)
    unif = lambda lo, hi, *s: lo + (hi - lo) * torch.rand(*s, generator=g)
    lin = lambda out, inp, scale=1.0: randn(out, inp) * (scale / math.sqrt(inp))  # fan_in = inp
    lora = lambda inp, out, scale: randn(inp, out) * (scale / math.sqrt(inp))  # x @ W, W [in, out]
    gain = lambda: 1.0 + 0.1 * randn(c)
    bias = lambda: 0.1 * randn(c)
    vec = lambda t: t.view(1, 1, c)

    w = {"emb.weight": randn(vsz, c)}
    for i in range(cfg["n_layer"]):
        b = f"blocks.{i}."
        if i == 0:
            w[b + "ln0.weight"], w[b + "ln0.bias"] = gain(), bias()
        w[b + "ln1.weight"], w[b + "ln1.bias"] = gain(), bias()
        w[b + "ln2.weight"], w[b + "ln2.bias"] = gain(), bias()
        att = b + "att."
        for m in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            w[att + m] = vec(unif(0.0, 1.0, c))
        w[att + "w0"] = vec(unif(-3.0, 1.0, c))
        w[att + "w1"] = lora(c, dw, 1.0)
        w[att + "w2"] = lora(dw, c, 1.0)
        w[att + "a0"] = vec(0.5 * randn(c))
        w[att + "a1"] = lora(c, da, 1.0)
        w[att + "a2"] = lora(da, c, 1.0)
        if i > 0:
            w[att + "v0"] = vec(0.5 * randn(c))
            w[att + "v1"] = lora(c, dv, 1.0)
            w[att + "v2"] = lora(dv, c, 1.0)
        w[att + "g1"] = lora(c, dg, 1.0)
        w[att + "g2"] = lora(dg, c, 1.0)
        w[att + "k_k"] = vec(0.7 + 0.2 * randn(c))
        w[att + "k_a"] = vec(1.0 + 0.2 * randn(c))
        w[att + "r_k"] = 0.3 * randn(h, n)
        for m in ("receptance", "key", "value", "output"):
            w[att + m + ".weight"] = lin(c, c)
        w[att + "ln_x.weight"], w[att + "ln_x.bias"] = gain(), bias()
        w[b + "ffn.x_k"] = vec(unif(0.0, 1.0, c))
        w[b + "ffn.key.weight"] = lin(f, c)
        w[b + "ffn.value.weight"] = lin(c, f)
    w["ln_out.weight"], w["ln_out.bias"] = gain(), bias()
    w["head.weight"] = randn(vsz, c) / math.sqrt(c)
    return {k: t.float().contiguous() for k, t in w.items()}


# ----------------------------------------------------------------------------- oracle


def import_pip_rwkv():
    os.environ["RWKV_V7_ON"] = "1"
    os.environ["RWKV_JIT_ON"] = "0"
    os.environ.pop("RWKV_CUDA_ON", None)
    import contextlib
    import io
    import warnings

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script deprecation
        from rwkv.model import RWKV  # prints a banner
    return RWKV


def pip_logits(weights, tokens):
    """(GPT-mode logits [B,T,V], RNN-mode logits [B,T,V]) from the pip rwkv package."""
    RWKV = import_pip_rwkv()
    import contextlib
    import io
    import warnings

    with tempfile.TemporaryDirectory() as d:
        stem = os.path.join(d, "tiny")
        torch.save({k: t.clone() for k, t in weights.items()}, stem + ".pth")
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = RWKV(model=stem, strategy="cpu fp32")  # appends ".pth" itself
    gpt, rnn = [], []
    for row in tokens.tolist():
        out, _ = model.forward(row, None, full_output=True)
        gpt.append(out.float())
        state, outs = None, []
        for tok in row:
            o, state = model.forward(tok, state)
            outs.append(o.float())
        rnn.append(torch.stack(outs))
    return torch.stack(gpt), torch.stack(rnn)


# ----------------------------------------------------------------------------- fixtures


def write_tiny(out_dir):
    cfg = CONFIG
    weights = make_weights(cfg, MODEL_SEED)
    gen = torch.Generator().manual_seed(TOKEN_SEED)
    tokens = torch.randint(0, cfg["vocab_size"], (BATCH, SEQ), generator=gen)

    leaves = {k: t.clone().requires_grad_(True) for k, t in weights.items()}
    logits = reference_forward(leaves, cfg, tokens)
    loss = lm_loss(logits, tokens)
    loss.backward()
    grads = {k: leaves[k].grad.detach().contiguous() for k in weights}
    logits = logits.detach()

    # Sanity on the init: logits O(1), no dead or exploding gradient.
    gnorm = {k: float(g.norm()) for k, g in grads.items()}
    assert logits.abs().max() < 20 and logits.std() > 0.3, float(logits.std())
    assert min(gnorm.values()) > 1e-4 and max(gnorm.values()) < 1e2, (
        min(gnorm.items(), key=lambda kv: kv[1]), max(gnorm.items(), key=lambda kv: kv[1]))

    # (a), (b): pip rwkv, GPT mode and RNN mode.
    gpt, rnn = pip_logits(weights, tokens)
    d_gpt = (gpt - logits).abs().max().item()
    d_rnn = (rnn - logits).abs().max().item()
    # RNN mode sums the state in another order (one token at a time, the
    # pip package's own float32 path): a few 1e-5 at these logit scales.
    assert d_gpt < 1e-5 and d_rnn < 1e-4, (d_gpt, d_rnn)

    # (c): finite differences of the loss (float64) along a random direction.
    g64 = torch.Generator().manual_seed(5)
    w64 = {k: t.double() for k, t in weights.items()}
    dirs = {k: torch.randn(t.shape, generator=g64, dtype=torch.float64) for k, t in weights.items()}
    dnorm = math.sqrt(sum(float((t * t).sum()) for t in dirs.values()))
    dirs = {k: t / dnorm for k, t in dirs.items()}  # unit-norm direction
    leaves64 = {k: t.clone().requires_grad_(True) for k, t in w64.items()}
    l64 = lm_loss(reference_forward(leaves64, cfg, tokens), tokens)
    l64.backward()
    analytic = sum((leaves64[k].grad * dirs[k]).sum() for k in w64).item()
    eps = 1e-4
    with torch.no_grad():
        lp = lm_loss(reference_forward({k: w64[k] + eps * dirs[k] for k in w64}, cfg, tokens), tokens)
        lm = lm_loss(reference_forward({k: w64[k] - eps * dirs[k] for k in w64}, cfg, tokens), tokens)
    numeric = ((lp - lm) / (2 * eps)).item()
    rel_fd = abs(numeric - analytic) / max(abs(analytic), 1e-12)
    assert rel_fd < 1e-6, (numeric, analytic)
    d_g64 = max((leaves64[k].grad.float() - grads[k]).abs().max().item() for k in grads)
    assert d_g64 < 1e-4, d_g64

    tiny = os.path.join(out_dir, "tiny")
    os.makedirs(tiny, exist_ok=True)
    with open(os.path.join(tiny, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    save_file(weights, os.path.join(tiny, "model.safetensors"))
    save_file(grads, os.path.join(tiny, "grads.safetensors"))
    golden = {
        "tokens": tokens.tolist(),
        "logits_shape": list(logits.shape),
        "logits": logits.tolist(),
        "loss": float(loss.detach()),
        "grad_norms": gnorm,
    }
    with open(os.path.join(tiny, "golden.json"), "w") as f:
        json.dump(golden, f)
        f.write("\n")

    v = cfg["vocab_size"]
    print(f"rwkv7 tiny: loss {loss.item():.6f} (ln V = {math.log(v):.6f}), tensors {len(weights)}, "
          f"floats {sum(t.numel() for t in weights.values())}, logits std {logits.std():.3f}")
    print(f"grad norms: min {min(gnorm.values()):.3e}, max {max(gnorm.values()):.3e}")
    print(f"pip rwkv (cpu fp32) GPT mode: max |logit diff| {d_gpt:.2e}")
    print(f"pip rwkv (cpu fp32) RNN mode: max |logit diff| {d_rnn:.2e}")
    print(f"float64 finite differences: rel err {rel_fd:.2e}; max |grad f32 - grad f64| {d_g64:.2e}")


def write_wkv(out_dir):
    bsz, t_len, h, n = 2, 9, 2, 8
    c = h * n
    g = torch.Generator().manual_seed(WKV_SEED)
    randn = lambda: torch.randn(bsz, t_len, c, generator=g)
    r, k, v = randn(), randn(), randn()
    # decay factor exp(-exp(w)) with w in the model's range (-inf, -0.5): (0.545, 0.982)
    w = torch.exp(-torch.exp(-4.0 + 3.5 * torch.rand(bsz, t_len, c, generator=g)))
    kk = F.normalize(randn().view(bsz, t_len, h, n), dim=-1).view(bsz, t_len, c)
    alpha = torch.rand(bsz, t_len, c, generator=g)
    a, b = -kk, kk * alpha
    gy = randn()
    ins = dict(r=r, w=w, k=k, v=v, a=a, b=b)
    leaves = {kname: t.clone().requires_grad_(True) for kname, t in ins.items()}
    y = wkv7(*(leaves[x] for x in "rwkvab"), n)
    (y * gy).sum().backward()

    # (d): independent einsum formulation, and gradcheck in float64.
    d_einsum = (wkv7_einsum(*(ins[x] for x in "rwkvab"), n) - y.detach()).abs().max().item()
    assert d_einsum < 1e-5, d_einsum
    small = tuple(t[:1, :5].double().clone().requires_grad_(True) for t in (ins[x] for x in "rwkvab"))
    assert torch.autograd.gradcheck(lambda *z: wkv7(*z, n), small), "wkv gradcheck failed"

    tensors = dict(ins, gy=gy, y=y.detach())
    for x in "rwkvab":
        tensors["d" + x] = leaves[x].grad.detach()
    tensors = {kname: t.float().contiguous() for kname, t in tensors.items()}
    d = os.path.join(out_dir, "wkv")
    os.makedirs(d, exist_ok=True)
    save_file(tensors, os.path.join(d, "wkv.safetensors"))
    print(f"wkv: y max {y.abs().max():.3f}; einsum formulation max diff {d_einsum:.2e}; gradcheck ok")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default=DEFAULT_OUT, help="writes OUT/tiny and OUT/wkv")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    write_tiny(args.out_dir)
    write_wkv(args.out_dir)
    for sub in ("tiny", "wkv"):
        for f in os.listdir(os.path.join(args.out_dir, sub)):
            os.chmod(os.path.join(args.out_dir, sub, f), 0o644)


if __name__ == "__main__":
    sys.exit(main())
