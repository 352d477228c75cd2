#!/usr/bin/env python3
"""The PyTorch side of experiments/bench-8m: train-step throughput of the
Llama-style decoder of configs/bench-8m.toml, written in plain eager PyTorch.

Shape (defaults): dim 256, 8 layers, 4 query / 2 key-value heads, SwiGLU 704,
vocab 8192, seq 256, batch 8, tied embeddings; RMSNorm (eps 1e-5) before
attention and FFN, RoPE (theta 1e4, rotate-half), causal SDPA.

One step, as `kiln bench` times it: forward, mean cross-entropy (in f32),
backward, global-norm clipping to 1.0, AdamW (lr 1e-3, weight decay 0.1),
gradients dropped. The same random batch every step (throughput only). The
step time is the median over --steps steps after --warmup; the device is
synchronised before and after each step.

MFU uses the FLOP count kiln bench uses: per token 6 x parameters (every
weight takes part in one matmul; the tied embedding in the head's) plus
6 x layers x seq x dim for the causal attention scores, against the
throughput of one large matmul measured in this process (2048^3 on CPU,
8192^3 on CUDA).

Prints one JSON line: impl, device, dtype, threads, params, tokens_per_step,
median_step_s, tokens_per_s, achieved_gflops, matmul_peak_gflops,
mfu_vs_matmul_peak, first_loss, last_loss.

usage: torch_llama_bench.py [--dim 256 --layers 8 --heads 4 --kv-heads 2
           --ffn 704 --vocab 8192 --seq 256 --batch 8 --steps 20 --warmup 3
           --device cpu --dtype float32 --threads 0 --compile]
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):  # [B, T, C]
        scale = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return x * scale * self.weight


def rotary_tables(seq, head_dim, theta=10000.0):
    """cos and sin of every (position, dimension pair), each [T, head_dim]
    with the pair's angle repeated in both halves (rotate-half layout)."""
    pairs = torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim
    inv_freq = theta ** -pairs  # [head_dim / 2]
    angles = torch.arange(seq, dtype=torch.float32)[:, None] * inv_freq[None, :]
    angles = torch.cat((angles, angles), dim=-1)  # [T, head_dim]
    return angles.cos(), angles.sin()


def rotate(x, cos, sin):  # x: [B, H, T, D]; cos, sin: [T, D]
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


class DecoderBlock(nn.Module):
    def __init__(self, dim, heads, kv_heads, ffn):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.attn_norm = RMSNorm(dim)
        self.wq = nn.Linear(dim, heads * self.head_dim, bias=False)
        self.wk = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(heads * self.head_dim, dim, bias=False)
        self.ffn_norm = RMSNorm(dim)
        self.w_gate = nn.Linear(dim, ffn, bias=False)
        self.w_up = nn.Linear(dim, ffn, bias=False)
        self.w_down = nn.Linear(ffn, dim, bias=False)

    def split_heads(self, x, n):  # [B, T, n * D] -> [B, n, T, D]
        b, t, _ = x.shape
        return x.view(b, t, n, self.head_dim).transpose(1, 2)

    def forward(self, x, cos, sin):
        b, t, c = x.shape
        h = self.attn_norm(x)
        q = rotate(self.split_heads(self.wq(h), self.heads), cos, sin)
        k = rotate(self.split_heads(self.wk(h), self.kv_heads), cos, sin)
        v = self.split_heads(self.wv(h), self.kv_heads)
        group = self.heads // self.kv_heads  # GQA: each kv head serves `group` query heads
        k = k.repeat_interleave(group, dim=1)  # [B, H, T, D]
        v = v.repeat_interleave(group, dim=1)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, D]
        x = x + self.wo(att.transpose(1, 2).reshape(b, t, c))
        h = self.ffn_norm(x)
        return x + self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))


class Decoder(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed = nn.Embedding(a.vocab, a.dim)
        self.blocks = nn.ModuleList(
            DecoderBlock(a.dim, a.heads, a.kv_heads, a.ffn) for _ in range(a.layers)
        )
        self.norm = RMSNorm(a.dim)
        cos, sin = rotary_tables(a.seq, a.dim // a.heads)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for p in self.parameters():
            if p.dim() == 2:  # matrices (embedding included); norms stay at 1
                nn.init.normal_(p, mean=0.0, std=0.02)

    def forward(self, ids):  # [B, T] -> [B, T, vocab]
        x = self.embed(ids)
        t = ids.shape[1]
        cos, sin = self.cos[:t], self.sin[:t]
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.norm(x) @ self.embed.weight.t()  # tied head


def synchronize(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_flops_per_s(device, dtype, reps=10):
    n = 8192 if device.startswith("cuda") else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        torch.matmul(a, b)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        torch.matmul(a, b)
    synchronize(device)
    return 2.0 * n**3 * reps / (time.perf_counter() - start)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sizes = dict(dim=256, layers=8, heads=4, kv_heads=2, ffn=704, vocab=8192,
                 seq=256, batch=8, steps=20, warmup=3)
    for name, default in sizes.items():
        p.add_argument("--" + name.replace("_", "-"), type=int, default=default)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="bfloat16: autocast the forward (weights stay f32)")
    p.add_argument("--threads", type=int, default=0, help="0: PyTorch's default")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    return p.parse_args()


def main():
    a = parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Decoder(a).to(a.device)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    forward = torch.compile(model) if a.compile else model
    autocast = torch.autocast(device_type=a.device.split(":")[0], dtype=torch.bfloat16,
                              enabled=a.dtype == "bfloat16")
    window = torch.randint(0, a.vocab, (a.batch, a.seq + 1), device=a.device)
    inputs, targets = window[:, :-1], window[:, 1:]

    losses, step_times = [], []
    for step in range(a.warmup + a.steps):
        synchronize(a.device)
        start = time.perf_counter()
        with autocast:
            logits = forward(inputs)  # [B, T, vocab]
            loss = F.cross_entropy(logits.float().reshape(-1, a.vocab), targets.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        synchronize(a.device)
        if step >= a.warmup:
            step_times.append(time.perf_counter() - start)

    # The upper median, as kiln bench reports it.
    step_s = sorted(step_times)[len(step_times) // 2]
    tokens = a.batch * a.seq
    flops_per_token = 6 * params + 6 * a.layers * a.seq * a.dim
    achieved = flops_per_token * tokens / step_s
    peak = matmul_flops_per_s(a.device, torch.bfloat16 if a.dtype == "bfloat16" else torch.float32)
    print(json.dumps({
        "impl": f"pytorch-{torch.__version__}",
        "device": a.device,
        "dtype": a.dtype,
        "threads": torch.get_num_threads(),
        "params": params,
        "tokens_per_step": tokens,
        "median_step_s": round(step_s, 5),
        "tokens_per_s": round(tokens / step_s, 1),
        "achieved_gflops": round(achieved / 1e9, 2),
        "matmul_peak_gflops": round(peak / 1e9, 2),
        "mfu_vs_matmul_peak": round(achieved / peak, 3),
        "first_loss": round(losses[0], 4),
        "last_loss": round(losses[-1], 4),
        "mean_step_s": round(statistics.fmean(step_times), 5),
    }))


if __name__ == "__main__":
    main()
