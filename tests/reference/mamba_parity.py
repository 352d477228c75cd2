#!/usr/bin/env python3
"""Golden fixtures for Kiln's Mamba-1 blocks (specs.md section 4).

Regenerate (from the repository root):

    /work/venv/bin/python tests/reference/mamba_parity.py

writes tests/fixtures/mamba/tiny/{config.json, model.safetensors, golden.json,
grads.safetensors}.

Oracle: ``transformers.MambaForCausalLM`` on CPU in float32. Without the
``mamba_ssm`` / ``causal_conv1d`` kernels (and outside torch.compile) it runs the
slow path: conv1d + the sequential per-timestep selective scan. The weights are
HF's random init (seeded) with the RMSNorm gains set to 1 + 0.1 * randn and D to
1 + 0.1 * randn, so every parameter is exercised.

Config: vocab 61, hidden 32, 2 layers, state 8, expand 2 (d_inner 64),
conv 4, dt_rank "auto" = ceil(32 / 16) = 2, tied embeddings.

Self-check on every generation: an independent plain-torch Mamba written from
specs.md section 4 (one leaf per weight) reproduces the logits, the loss and every
gradient, and ``from_pretrained`` of the saved folder reproduces the logits exactly.

golden.json: tokens [2][13], logits [2][13][61], loss (mean cross-entropy of
logits[:, :-1] vs tokens[:, 1:]), grad_norms {HF name: L2 norm}.
grads.safetensors: the full gradient of every HF tensor (same names), for
element-wise comparison.
"""

import argparse
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import MambaConfig, MambaForCausalLM
from transformers.utils import logging as hf_logging

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "mamba", "tiny")
BATCH, SEQ, TOKEN_SEED, MODEL_SEED = 2, 13, 1234, 201

CONFIG = dict(
    vocab_size=61,
    hidden_size=32,
    state_size=8,
    num_hidden_layers=2,
    expand=2,
    conv_kernel=4,
    layer_norm_epsilon=1e-5,
    use_bias=False,
    use_conv_bias=True,
    tie_word_embeddings=True,
    use_mambapy=False,
    use_associative_scan=False,
    pad_token_id=0,
    bos_token_id=0,
    eos_token_id=0,
)


def independent_forward(w, cfg, tokens):
    """Plain-torch Mamba-1 from specs.md section 4, independent of transformers."""
    d, n = cfg.hidden_size, cfg.state_size
    di, r, k = cfg.intermediate_size, cfg.time_step_rank, cfg.conv_kernel
    eps = cfg.layer_norm_epsilon
    bsz, t = tokens.shape

    def rms(x, g):
        return g * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    x = w["backbone.embeddings.weight"][tokens]
    for i in range(cfg.num_hidden_layers):
        p = lambda s: w[f"backbone.layers.{i}.mixer.{s}"]
        h = rms(x, w[f"backbone.layers.{i}.norm.weight"])
        xz = h @ p("in_proj.weight").T
        xs, z = xz[..., :di], xz[..., di:]
        xp = torch.cat([torch.zeros(bsz, k - 1, di), xs], 1)
        cw = p("conv1d.weight")[:, 0, :]  # [di, k]
        conv = p("conv1d.bias") + sum(xp[:, j:j + t] * cw[:, j] for j in range(k))
        u = F.silu(conv)
        dbc = u @ p("x_proj.weight").T
        dt, bm, cm = dbc[..., :r], dbc[..., r:r + n], dbc[..., r + n:]
        delta = F.softplus(dt @ p("dt_proj.weight").T + p("dt_proj.bias"))
        a = -torch.exp(p("A_log"))
        state = torch.zeros(bsz, di, n)
        ys = []
        for s in range(t):
            decay = torch.exp(delta[:, s, :, None] * a)
            state = decay * state + (delta[:, s] * u[:, s])[..., None] * bm[:, s, None, :]
            ys.append((state * cm[:, s, None, :]).sum(-1))
        y = torch.stack(ys, 1) + u * p("D")
        x = x + (y * F.silu(z)) @ p("out_proj.weight").T
    x = rms(x, w["backbone.norm_f.weight"])
    return x @ w["backbone.embeddings.weight"].T


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default=DEFAULT_OUT)
    args = ap.parse_args()
    hf_logging.disable_progress_bar()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    torch.manual_seed(MODEL_SEED)
    cfg = MambaConfig(**CONFIG)
    model = MambaForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("norm_f.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape))
            if name.endswith("mixer.D"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape))
    assert model.lm_head.weight is model.backbone.embeddings.weight, "embeddings not tied"

    os.makedirs(args.out_dir, exist_ok=True)
    model.save_pretrained(args.out_dir)
    for f in os.listdir(args.out_dir):
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(args.out_dir, f))

    gen = torch.Generator().manual_seed(TOKEN_SEED)
    tokens = torch.randint(0, cfg.vocab_size, (BATCH, SEQ), generator=gen)
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=tokens, use_cache=False).logits
    v = logits.shape[-1]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, v), tokens[:, 1:].reshape(-1))
    loss.backward()

    sd = load_file(os.path.join(args.out_dir, "model.safetensors"))
    assert "lm_head.weight" not in sd, "tied lm_head duplicated in safetensors"
    params = dict(model.named_parameters())
    assert set(sd) == set(params), sorted(set(sd) ^ set(params))
    grads = {k: params[k].grad.detach().contiguous() for k in sorted(sd)}

    # Independent re-derivation from the saved weights.
    leaves = {k: t.clone().requires_grad_(True) for k, t in sd.items()}
    out = independent_forward(leaves, cfg, tokens)
    l2 = F.cross_entropy(out[:, :-1].reshape(-1, v), tokens[:, 1:].reshape(-1))
    l2.backward()
    dl = (out.detach() - logits.detach()).abs().max().item()
    dg = max((leaves[k].grad - g).abs().max().item() for k, g in grads.items())
    assert dl < 1e-5 and abs(l2.item() - loss.item()) < 1e-6 and dg < 1e-5, (dl, dg)

    reloaded = MambaForCausalLM.from_pretrained(args.out_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        rl = reloaded(input_ids=tokens, use_cache=False).logits
    assert (rl - logits.detach()).abs().max().item() == 0.0, "reloaded model differs"

    save_file(grads, os.path.join(args.out_dir, "grads.safetensors"))
    golden = {
        "tokens": tokens.tolist(),
        "logits_shape": list(logits.shape),
        "logits": logits.detach().tolist(),
        "loss": float(loss.detach()),
        "grad_norms": {k: float(g.norm()) for k, g in grads.items()},
    }
    with open(os.path.join(args.out_dir, "golden.json"), "w") as f:
        json.dump(golden, f)
        f.write("\n")
    for f in os.listdir(args.out_dir):
        os.chmod(os.path.join(args.out_dir, f), 0o644)
    print(f"mamba tiny: loss {loss.item():.6f} (ln V = {math.log(v):.6f}), tensors {len(sd)}, "
          f"floats {sum(t.numel() for t in sd.values())}")
    print(f"independent plain-torch check: logits {dl:.2e}, max grad diff {dg:.2e}")


if __name__ == "__main__":
    main()
