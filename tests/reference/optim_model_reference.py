#!/usr/bin/env python3
"""Golden trajectories of AdamW and SophiaG on a tiny Llama (specs.md sections 6-7).

Regenerate (from the repository root):

    /work/venv/bin/python tests/reference/optim_model_reference.py

writes tests/fixtures/optim/model/{config.json, model.safetensors, golden.json}.

Model: transformers.LlamaForCausalLM, vocab 48, hidden 16, 2 layers, 2 heads,
1 kv head, SwiGLU 24, tied embeddings, random init (seed 11). Data: 10 fixed
batches x [2, 8] of random token ids and targets. Loss: mean cross-entropy of
logits against targets (no shift; the batches are already inputs/targets).

Each optimizer runs 10 steps from the same weights on the same batches:
  backward -> clip_grad_norm_(1.0) -> step, constant lr.
Parameter groups as kiln's rule: weight decay 0.1 on the 2-D projection
weights, none on norms and the (tied) embedding.

AdamW: torch.optim.AdamW(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=False).
SophiaG: the original `rho`/`bs` form of Liuhong99/Sophia `sophia.py` (the form
specs.md section 7 gives; re-implemented below, update rule unchanged):
  p *= 1 - lr wd; m = b1 m + (1-b1) g;
  p -= lr * sign(m) * clamp(|m| / (rho * bs * h + 1e-15), max=1)
with lr 2e-3, betas (0.965, 0.99), rho 20 (not the paper's 0.04: with 16-token
batches that would clip every coordinate), bs = 16 tokens, and after updates
3, 6 and 9 a Hessian refresh on that step's batch as in the reference
`train_sophiag.py`: logits = model(x); y ~ Categorical(logits=logits);
CE(logits, y).backward(); clip_grad_norm_(1.0); h = b2 h + (1-b2) g^2.
The sampled labels are saved so that kiln's test can feed the same ones.

golden.json: {adamw: {losses, params}, sophia: {losses, params, hessian_labels,
win_rates}}, params = final parameters by HF name (nested lists, float32 values).
"""

import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "optim", "model")
STEPS, B, T, V = 10, 2, 8, 48
CLIP = 1.0
# Larger than the paper's 0.04 so that, with 16-token batches, a good share of
# coordinates is not clipped and both branches of the update are exercised.
RHO = 20.0


class SophiaG(torch.optim.Optimizer):
    """SophiaG, `rho`/`bs` form (Liuhong99/Sophia, first public version)."""

    def __init__(self, params, lr, betas, rho, weight_decay):
        super().__init__(params, dict(lr=lr, betas=betas, rho=rho, weight_decay=weight_decay))

    @torch.no_grad()
    def update_hessian(self):
        for group in self.param_groups:
            _, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._init(p)
                state["hessian"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)

    def _init(self, p):
        state = self.state[p]
        if len(state) == 0:
            state["exp_avg"] = torch.zeros_like(p)
            state["hessian"] = torch.zeros_like(p)
        return state

    @torch.no_grad()
    def step(self, bs):
        not_clipped, total = 0, 0
        for group in self.param_groups:
            beta1, _ = group["betas"]
            lr, rho, wd = group["lr"], group["rho"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._init(p)
                m, h = state["exp_avg"], state["hessian"]
                p.mul_(1 - lr * wd)
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                ratio = (m.abs() / (rho * bs * h + 1e-15)).clamp(None, 1)
                p.addcmul_(m.sign(), ratio, value=-lr)
                not_clipped += int((ratio < 1).sum())
                total += ratio.numel()
        return not_clipped / total


def build():
    cfg = LlamaConfig(
        vocab_size=V, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=T,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
        attention_bias=False, mlp_bias=False, hidden_act="silu",
    )
    torch.manual_seed(11)
    model = LlamaForCausalLM(cfg).float()
    with torch.no_grad():  # HF zero-inits nothing here, but make norms non-trivial
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.add_(0.1 * torch.randn_like(p))
    return cfg, model


def groups(model):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed_tokens" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed_tokens" not in n)]
    return decay, rest


def loss_of(model, x, y):
    logits = model(input_ids=x).logits  # [B, T, V]
    return F.cross_entropy(logits.reshape(-1, V), y.reshape(-1)), logits


def run(kind, cfg, state, batches):
    model = LlamaForCausalLM(cfg).float()
    model.load_state_dict(state)
    decay, rest = groups(model)
    if kind == "adamw":
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
            lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=False,
        )
    else:
        opt = SophiaG(
            [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
            lr=2e-3, betas=(0.965, 0.99), rho=RHO, weight_decay=0.0,
        )
    torch.manual_seed(5)  # the label sampling below
    losses, labels, win_rates = [], [], []
    for step, (x, y) in enumerate(batches):
        opt.zero_grad(set_to_none=True)
        loss, _ = loss_of(model, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        losses.append(float(loss.detach()))
        if kind == "adamw":
            opt.step()
            continue
        win_rates.append(opt.step(bs=B * T))
        if (step + 1) % 3 == 0:
            opt.zero_grad(set_to_none=True)
            logits = model(input_ids=x).logits
            y_hat = torch.distributions.Categorical(logits=logits).sample()  # uses the global RNG
            labels.append({"after_update": step + 1, "labels": y_hat.tolist()})
            F.cross_entropy(logits.reshape(-1, V), y_hat.reshape(-1)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            opt.update_hessian()
    params = {n: p.detach().tolist() for n, p in model.state_dict().items() if n != "lm_head.weight"}
    out = {"losses": losses, "params": params}
    if kind == "sophia":
        out["hessian_labels"] = labels
        out["win_rates"] = win_rates
    return out


def main():
    cfg, model = build()
    os.makedirs(OUT, exist_ok=True)
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    save_file({k: v for k, v in state.items() if k != "lm_head.weight"}, os.path.join(OUT, "model.safetensors"))
    cfg.save_pretrained(OUT)  # config.json
    torch.manual_seed(3)
    batches = [(torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))) for _ in range(STEPS)]
    golden = {
        "batches": [{"x": x.tolist(), "y": y.tolist()} for x, y in batches],
        "adamw": run("adamw", cfg, state, batches),
        "sophia": run("sophia", cfg, state, batches),
    }
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(golden, f)
    print("adamw losses ", [round(x, 4) for x in golden["adamw"]["losses"]])
    print("sophia losses", [round(x, 4) for x in golden["sophia"]["losses"]])
    print("sophia win rates", [round(x, 3) for x in golden["sophia"]["win_rates"]])


if __name__ == "__main__":
    main()
