#!/usr/bin/env python3
"""Golden fixtures for the Kiln Llama-style decoder (specs.md sections 1-3).

Regenerate (from the repository root):

    /work/venv/bin/python tests/reference/llama_parity.py

writes, for each variant in {tied, gqa, shared_blocks, shared_ffn}:

    tests/fixtures/llama/<variant>/config.json        (from save_pretrained)
    tests/fixtures/llama/<variant>/model.safetensors  (HF state dict, save_pretrained)
    tests/fixtures/llama/<variant>/golden.json

Optional: ``--out-dir DIR`` writes somewhere else (used to check reproducibility).

The oracle is ``transformers.LlamaForCausalLM`` on CPU in float32 with
``attn_implementation="eager"``. Weights are the HF random init
(normal(0, 0.02), seeded) with the RMSNorm weights perturbed to 1 + 0.1*randn so the
norm gains are actually exercised.

Variants
--------
tied           vocab 61, hidden 32, 2 layers, 4 heads / 4 kv heads, ffn 48, tied embeddings
gqa            vocab 61, hidden 32, 3 layers, 4 heads / 2 kv heads, ffn 40, untied (lm_head)
shared_blocks  MobileLLM-LS, share_repeat = 2: 2 stored blocks -> 4-layer HF Llama where
               layers 2i and 2i+1 are identical copies of stored block i;
               4 heads / 2 kv heads, ffn 48, tied
shared_ffn     MobiLlama: 3 layers, MHA 4/4, ffn 56, untied; layer 0's mlp.{gate,up,down}
               copied into every layer (per-layer attention and norms)

Self-checks run on every generation: tied weights are not duplicated in the safetensors,
shared copies are bit-identical, from_pretrained(saved dir) reproduces the logits exactly,
and an independent plain-torch decoder written from specs.md (one leaf per stored weight,
so autograd sums shared gradients) matches logits/loss/grad_norms_summed.

golden.json
-----------
tokens          [2][13] int, ids in [0, 61) from torch.Generator seeded with TOKEN_SEED
logits          [2][13][61] float (float32 values widened to double, exact)
logits_shape    [2, 13, 61]
loss            mean cross-entropy of logits[:, :-1] vs tokens[:, 1:] (float32 computation)
grad_norms      {HF tensor name: L2 norm of d loss / d tensor}, one entry per tensor in
                model.safetensors. For shared variants these are the gradients of each
                HF copy separately (per application).
grad_norms_summed  {representative HF name: L2 norm of the SUM of the gradients over the
                copies sharing that weight}; this is what a framework that stores the shared
                weight once sees. Non-shared tensors appear with their own norm, so this dict
                has exactly one entry per unique (stored) parameter. Representative = first
                copy (model.layers.{2i}.* for shared_blocks, model.layers.0.mlp.* for shared_ffn).
shared_groups   {representative HF name: [HF names of all copies]} (only groups of size > 1)
variant         variant name
share_repeat    1 or 2
shared_ffn      bool
"""

import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "llama")

BATCH, SEQ = 2, 13
TOKEN_SEED = 1234

VARIANTS = {
    # name: (model seed, config kwargs, share_repeat, shared_ffn)
    "tied": (
        101,
        dict(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=4, intermediate_size=48, tie_word_embeddings=True),
        1,
        False,
    ),
    "gqa": (
        102,
        dict(vocab_size=61, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, intermediate_size=40, tie_word_embeddings=False),
        1,
        False,
    ),
    "shared_blocks": (
        103,
        # 2 stored blocks applied twice each -> 4 HF layers
        dict(vocab_size=61, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, intermediate_size=48, tie_word_embeddings=True),
        2,
        False,
    ),
    "shared_ffn": (
        104,
        dict(vocab_size=61, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=4, intermediate_size=56, tie_word_embeddings=False),
        1,
        True,
    ),
}

COMMON = dict(
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    max_position_embeddings=64,
    attention_bias=False,
    mlp_bias=False,
    initializer_range=0.02,
    hidden_act="silu",
)


def build_model(seed, cfg_kwargs, share_repeat, shared_ffn):
    torch.manual_seed(seed)
    config = LlamaConfig(**COMMON, **cfg_kwargs)
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config).float().eval()
    model.config._attn_implementation = "eager"

    with torch.no_grad():
        # perturb every RMSNorm gain: 1 + 0.1 * randn
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.copy_(1.0 + 0.1 * torch.randn(p.shape))

        layers = model.model.layers
        if share_repeat == 2:
            assert len(layers) % 2 == 0
            for i in range(len(layers) // 2):
                src = dict(layers[2 * i].named_parameters())
                for n, p in layers[2 * i + 1].named_parameters():
                    p.copy_(src[n])
        if shared_ffn:
            src = dict(layers[0].mlp.named_parameters())
            for layer in layers[1:]:
                for n, p in layer.mlp.named_parameters():
                    p.copy_(src[n])

    if cfg_kwargs["tie_word_embeddings"]:
        assert model.lm_head.weight is model.model.embed_tokens.weight, "embeddings not tied"
    return model


def shared_groups_for(names, n_layers, share_repeat, shared_ffn):
    """{representative: [copies]} for every tensor (singletons included)."""
    groups = {}
    owner = {}
    for n in names:
        rep = n
        if n.startswith("model.layers."):
            parts = n.split(".")
            idx = int(parts[2])
            rest = ".".join(parts[3:])
            if share_repeat == 2:
                rep = f"model.layers.{idx - idx % 2}.{rest}"
            if shared_ffn and rest.startswith("mlp."):
                rep = f"model.layers.0.{rest}"
        owner[n] = rep
        groups.setdefault(rep, []).append(n)
    return groups


def f32_list(t):
    # float32 tensor -> nested python floats (exact widening to double)
    return t.detach().to(torch.float32).tolist()


def independent_forward(stored, cfg, tokens, n_apply):
    """Plain-torch decoder written from specs.md section 1, independent of transformers.

    ``stored`` maps HF names of the *stored* (unique) tensors to leaf tensors; a shared
    weight appears once, so autograd sums the gradient over its applications.
    ``n_apply`` is the list of HF layer indices whose weights each application uses.
    """
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg["hidden_size"]
    hd = D // H
    eps = COMMON["rms_norm_eps"]
    B, T = tokens.shape

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    inv = 1.0 / (COMMON["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
    cos = torch.cat([ang, ang], -1).cos()
    sin = torch.cat([ang, ang], -1).sin()

    def rope(x):  # [B, h, T, hd], rotate-half
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    mask = torch.full((T, T), float("-inf")).triu(1)
    x = stored["model.embed_tokens.weight"][tokens]
    for li in n_apply:
        w = lambda n: stored[n.format(li)]
        h = rms(x, w("model.layers.{}.input_layernorm.weight"))
        q = (h @ w("model.layers.{}.self_attn.q_proj.weight").T).view(B, T, H, hd).transpose(1, 2)
        k = (h @ w("model.layers.{}.self_attn.k_proj.weight").T).view(B, T, KV, hd).transpose(1, 2)
        v = (h @ w("model.layers.{}.self_attn.v_proj.weight").T).view(B, T, KV, hd).transpose(1, 2)
        q, k = rope(q), rope(k)
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, -1)
        o = (att @ v).transpose(1, 2).reshape(B, T, D)
        x = x + o @ w("model.layers.{}.self_attn.o_proj.weight").T
        h = rms(x, w("model.layers.{}.post_attention_layernorm.weight"))
        g = h @ w("model.layers.{}.mlp.gate_proj.weight").T
        u = h @ w("model.layers.{}.mlp.up_proj.weight").T
        x = x + (F.silu(g) * u) @ w("model.layers.{}.mlp.down_proj.weight").T
    x = rms(x, stored["model.norm.weight"])
    head = stored.get("lm_head.weight", stored["model.embed_tokens.weight"])
    return x @ head.T


def independent_check(name, sd, groups, cfg, share_repeat, tokens, logits, loss, grad_norms_summed):
    """Re-derive logits, loss and summed shared gradients from the stored weights only."""
    owner = {m: rep for rep, members in groups.items() for m in members}
    stored = {rep: sd[rep].clone().requires_grad_(True) for rep in groups}
    view = {n: stored[owner[n]] for n in sd}  # every HF name -> its stored leaf
    n_layers = cfg["num_hidden_layers"]
    order = list(range(n_layers))  # layer 2i+1 maps to the same leaves as 2i when shared
    out = independent_forward(view, cfg, tokens, order)
    V = out.shape[-1]
    l2 = F.cross_entropy(out[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1))
    l2.backward()
    dl = (out.detach() - logits).abs().max().item()
    dloss = abs(l2.item() - loss)
    dg = max(abs(float(stored[r].grad.norm()) - v) / max(v, 1e-12)
             for r, v in grad_norms_summed.items())
    assert dl < 1e-5 and dloss < 1e-5 and dg < 1e-4, (name, dl, dloss, dg)
    return dl, dloss, dg


def run_variant(name, out_root):
    seed, cfg_kwargs, share_repeat, shared_ffn = VARIANTS[name]
    model = build_model(seed, cfg_kwargs, share_repeat, shared_ffn)
    out_dir = os.path.join(out_root, name)
    os.makedirs(out_dir, exist_ok=True)

    model.save_pretrained(out_dir)
    # keep only config.json + model.safetensors
    for f in os.listdir(out_dir):
        if f not in ("config.json", "model.safetensors", "golden.json"):
            os.remove(os.path.join(out_dir, f))

    gen = torch.Generator().manual_seed(TOKEN_SEED)
    tokens = torch.randint(0, cfg_kwargs["vocab_size"], (BATCH, SEQ), generator=gen)

    model.zero_grad(set_to_none=True)
    logits = model(input_ids=tokens).logits  # [B, T, V]
    V = logits.shape[-1]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1))
    loss.backward()

    # one entry per tensor in the state dict that save_pretrained writes
    sd = load_file(os.path.join(out_dir, "model.safetensors"))
    if cfg_kwargs["tie_word_embeddings"]:
        assert "lm_head.weight" not in sd, "tied lm_head duplicated in safetensors"
    else:
        assert "lm_head.weight" in sd
    params = dict(model.named_parameters())  # dedups tied params
    assert set(sd) == set(params), (sorted(set(sd) ^ set(params)))
    for k, v in sd.items():
        assert torch.equal(v, params[k].detach()), k

    grads = {k: params[k].grad.detach() for k in sorted(sd)}
    grad_norms = {k: float(g.norm()) for k, g in grads.items()}

    groups = shared_groups_for(sorted(sd), cfg_kwargs["num_hidden_layers"], share_repeat, shared_ffn)
    grad_norms_summed = {}
    for rep, members in sorted(groups.items()):
        # copies must be bit-identical
        for m in members:
            assert torch.equal(sd[m], sd[rep]), (m, rep)
        g = torch.zeros_like(grads[rep])
        for m in members:
            g += grads[m]
        grad_norms_summed[rep] = float(g.norm())
    shared_groups = {rep: members for rep, members in sorted(groups.items()) if len(members) > 1}
    if share_repeat == 1 and not shared_ffn:
        assert not shared_groups

    # the saved files must reproduce the logits exactly
    reloaded = LlamaForCausalLM.from_pretrained(out_dir, dtype=torch.float32,
                                                attn_implementation="eager").eval()
    with torch.no_grad():
        relogits = reloaded(input_ids=tokens).logits
    diff = (relogits - logits.detach()).abs().max().item()
    assert diff == 0.0, f"{name}: reloaded model differs by {diff}"

    dl, dloss, dg = independent_check(name, sd, groups, cfg_kwargs, share_repeat, tokens,
                                      logits.detach(), float(loss.detach()), grad_norms_summed)

    golden = {
        "variant": name,
        "share_repeat": share_repeat,
        "shared_ffn": shared_ffn,
        "tokens": tokens.tolist(),
        "logits_shape": list(logits.shape),
        "logits": f32_list(logits),
        "loss": float(loss.detach()),
        "grad_norms": grad_norms,
        "grad_norms_summed": grad_norms_summed,
        "shared_groups": shared_groups,
    }
    with open(os.path.join(out_dir, "golden.json"), "w") as f:
        json.dump(golden, f)
        f.write("\n")

    for f in os.listdir(out_dir):
        os.chmod(os.path.join(out_dir, f), 0o644)

    maxlogit = logits.detach().abs().max().item()
    nparams = sum(v.numel() for v in sd.values())
    print(f"{name:14s} max|logit| = {maxlogit:.6f}  loss = {loss.item():.6f} "
          f"(ln V = {math.log(V):.6f})  tensors = {len(sd)}  floats = {nparams}  "
          f"shared groups = {len(shared_groups)}")
    print(f"{'':14s} independent plain-torch check: max logit diff {dl:.2e}, loss diff {dloss:.2e}, "
          f"max rel summed-grad-norm diff {dg:.2e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default=DEFAULT_OUT)
    ap.add_argument("variants", nargs="*", default=list(VARIANTS))
    args = ap.parse_args()
    hf_logging.disable_progress_bar()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    for v in args.variants:
        if v not in VARIANTS:
            sys.exit(f"unknown variant {v!r}; choose from {list(VARIANTS)}")
        run_variant(v, args.out_dir)


if __name__ == "__main__":
    main()
