#!/usr/bin/env python3
"""PyTorch reference for experiments/ssm-blocks: train-step throughput of an RWKV-7
("Goose", x070) model on CPU, at the shapes Kiln benchmarks.

Model: the maths of BlinkDL/RWKV-LM RWKV-v7/rwkv_v7_demo.py as an nn.Module (see
specs.md section 5 and tests/reference/rwkv7_parity.py), with the train_temp init
(mixing-coefficient ramps, w0 zigzag, zero first LoRA factors, orthogonal second
factors gain 0.1, emb U(+-1e-4), att.output and ffn.value zero, orthogonal head),
untied head, dim_ffn 4C, LoRA ranks max(32, round(k sqrt(C) / 32) * 32) with
k = 2.5 (decay), 2.5 (a), 1.7 (value residual), 5 (gate). The WKV recurrence is the
demo's per-timestep loop in float32 (the reference path on CPU; no custom kernel).

One step = forward, mean cross-entropy, backward, global-norm clip 1.0,
AdamW(lr 3e-4, betas (0.9, 0.99), eps 1e-18, weight decay 0.1 on 2-D ``.weight``
tensors only). Prints the parameter count, then one JSON line: tokens/s (median
step), step time, params, peak RSS (same fields as torch_ssm_bench.py).

usage: torch_rwkv7_bench.py [--dim 256 --layers 8 --head-size 64 --vocab 8192
                             --seq 256 --batch 8 --steps 5 --warmup 2 --threads 2]
"""
import argparse
import json
import math
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def lora_rank(k, c):
    return max(32, int(round(k * (c ** 0.5) / 32) * 32))


def wkv7(r, w, k, v, a, b, n):
    """Demo RWKV7_OP loop (w already the decay factor): S = S diag(w) + (S a) b^T + v k^T, y = S r."""
    bsz, t_len, c = r.shape
    h = c // n
    r, w, k, v, a, b = (x.view(bsz, t_len, h, n) for x in (r, w, k, v, a, b))
    state = torch.zeros(bsz, h, n, n, dtype=torch.float32)
    ys = []
    for t in range(t_len):
        state = (state * w[:, t, :, None, :]
                 + (state @ a[:, t, :, :, None]) @ b[:, t, :, None, :]
                 + v[:, t, :, :, None] @ k[:, t, :, None, :])
        ys.append((state @ r[:, t, :, :, None]).squeeze(-1))
    return torch.stack(ys, 1).reshape(bsz, t_len, c)


def time_shift(x):
    return F.pad(x, (0, 0, 1, -1))  # previous token along T, zeros at t = 0


class TimeMix(nn.Module):
    def __init__(self, c, n, layer_id, n_layer):
        super().__init__()
        self.layer_id, self.n = layer_id, n
        h = c // n
        r01 = layer_id / (n_layer - 1) if n_layer > 1 else 0.0
        r10 = 1.0 - layer_id / n_layer
        ddd = (torch.arange(c, dtype=torch.float32) / c).view(1, 1, c)
        mix = lambda p: nn.Parameter(1.0 - ddd ** (p * r10))
        self.x_r, self.x_w, self.x_k = mix(0.2), mix(0.9), mix(0.7)
        self.x_v, self.x_a, self.x_g = mix(0.7), mix(0.9), mix(0.2)

        idx = torch.arange(c, dtype=torch.float32)
        linear = idx / (c - 1) - 0.5
        zig = ((idx % n) - (n - 1) / 2) / ((n - 1) / 2)
        zig = zig * zig.abs()
        www = -6 + 6 * (idx / (c - 1)) ** (1 + r01 ** 0.3)

        def ortho(rows, cols, scale=0.1):
            t = torch.empty(rows, cols)
            gain = math.sqrt(rows / cols) if rows > cols else 1.0
            nn.init.orthogonal_(t, gain=gain * scale)
            return nn.Parameter(t)

        dw, da, dv, dg = (lora_rank(k, c) for k in (2.5, 2.5, 1.7, 5.0))
        self.w0 = nn.Parameter((www + 0.5 + zig * 2.5).view(1, 1, c))
        self.w1, self.w2 = nn.Parameter(torch.zeros(c, dw)), ortho(dw, c)
        self.a0 = nn.Parameter((-0.19 + zig * 0.3 + linear * 0.4).view(1, 1, c))
        self.a1, self.a2 = nn.Parameter(torch.zeros(c, da)), ortho(da, c)
        if layer_id > 0:
            self.v0 = nn.Parameter((0.73 - linear * 0.4).view(1, 1, c))
            self.v1, self.v2 = nn.Parameter(torch.zeros(c, dv)), ortho(dv, c)
        self.g1, self.g2 = nn.Parameter(torch.zeros(c, dg)), ortho(dg, c)
        self.k_k = nn.Parameter((0.71 - linear * 0.1).view(1, 1, c))
        self.k_a = nn.Parameter(torch.full((1, 1, c), 1.02))
        self.r_k = nn.Parameter(torch.full((h, n), -0.04))

        self.receptance = nn.Linear(c, c, bias=False)
        self.key = nn.Linear(c, c, bias=False)
        self.value = nn.Linear(c, c, bias=False)
        self.output = nn.Linear(c, c, bias=False)
        self.ln_x = nn.GroupNorm(h, c, eps=64e-5)
        with torch.no_grad():  # generate_init_weight overrides
            nn.init.orthogonal_(self.receptance.weight, gain=1.0)
            nn.init.orthogonal_(self.key.weight, gain=0.1)
            nn.init.orthogonal_(self.value.weight, gain=1.0)
            self.output.weight.zero_()
            self.ln_x.weight.fill_(((1 + layer_id) / n_layer) ** 0.7)

    def forward(self, x, v_first):
        bsz, t_len, c = x.shape
        n = self.n
        h = c // n
        xx = time_shift(x) - x
        xr, xw, xk = x + xx * self.x_r, x + xx * self.x_w, x + xx * self.x_k
        xv, xa, xg = x + xx * self.x_v, x + xx * self.x_a, x + xx * self.x_g
        r = self.receptance(xr)
        w = -F.softplus(-(self.w0 + torch.tanh(xw @ self.w1) @ self.w2)) - 0.5
        k = self.key(xk)
        v = self.value(xv)
        if self.layer_id == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        kk = F.normalize((k * self.k_k).view(bsz, t_len, h, n), dim=-1, p=2.0).view(bsz, t_len, c)
        k = k * (1 + (a - 1) * self.k_a)
        o = wkv7(r, torch.exp(-torch.exp(w)), k, v, -kk, kk * a, n)
        o = self.ln_x(o.reshape(bsz * t_len, c)).view(bsz, t_len, c)
        bonus = (r.view(bsz, t_len, h, n) * k.view(bsz, t_len, h, n) * self.r_k).sum(-1, keepdim=True)
        o = o + (bonus * v.view(bsz, t_len, h, n)).view(bsz, t_len, c)
        return self.output(o * g), v_first


class ChannelMix(nn.Module):
    def __init__(self, c, f, layer_id, n_layer):
        super().__init__()
        r10 = 1.0 - layer_id / n_layer
        ddd = (torch.arange(c, dtype=torch.float32) / c).view(1, 1, c)
        self.x_k = nn.Parameter(1.0 - ddd ** (r10 ** 4))
        self.key = nn.Linear(c, f, bias=False)
        self.value = nn.Linear(f, c, bias=False)
        with torch.no_grad():
            nn.init.orthogonal_(self.key.weight, gain=1.0)
            self.value.weight.zero_()

    def forward(self, x):
        xx = time_shift(x) - x
        return self.value(torch.relu(self.key(x + xx * self.x_k)) ** 2)


class Block(nn.Module):
    def __init__(self, c, n, f, layer_id, n_layer):
        super().__init__()
        self.layer_id = layer_id
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(c)
        self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.att = TimeMix(c, n, layer_id, n_layer)
        self.ffn = ChannelMix(c, f, layer_id, n_layer)

    def forward(self, x, v_first):
        if self.layer_id == 0:
            x = self.ln0(x)
        dx, v_first = self.att(self.ln1(x), v_first)
        x = x + dx
        return x + self.ffn(self.ln2(x)), v_first


class RWKV7(nn.Module):
    def __init__(self, vocab, c, n_layer, n):
        super().__init__()
        assert c % n == 0
        self.emb = nn.Embedding(vocab, c)
        self.blocks = nn.ModuleList(Block(c, n, 4 * c, i, n_layer) for i in range(n_layer))
        self.ln_out = nn.LayerNorm(c)
        self.head = nn.Linear(c, vocab, bias=False)
        with torch.no_grad():
            nn.init.uniform_(self.emb.weight, -1e-4, 1e-4)
            gain = 0.5 * math.sqrt(vocab / c) if vocab > c else 0.5
            nn.init.orthogonal_(self.head.weight, gain=gain)

    def forward(self, idx):
        x, v_first = self.emb(idx), None
        for blk in self.blocks:
            x, v_first = blk(x, v_first)
        return self.head(self.ln_out(x))


def main():
    p = argparse.ArgumentParser()
    for k, v in dict(dim=256, layers=8, head_size=64, vocab=8192,
                     seq=256, batch=8, steps=5, warmup=2, threads=2).items():
        p.add_argument("--" + k.replace("_", "-"), type=int, default=v)
    p.add_argument("--params-only", action="store_true", help="print the parameter count and exit")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = RWKV7(a.vocab, a.dim, a.layers, a.head_size).float().train()
    params = sum(t.numel() for t in model.parameters())
    ranks = [lora_rank(k, a.dim) for k in (2.5, 2.5, 1.7, 5.0)]
    print(f"rwkv7: params {params} (C {a.dim}, L {a.layers}, N {a.head_size}, V {a.vocab}, "
          f"ffn {4 * a.dim}, lora w/a/v/g {'/'.join(map(str, ranks))})", file=sys.stderr)
    if a.params_only:
        return
    decay = [t for n, t in model.named_parameters() if t.dim() >= 2 and n.endswith(".weight")]
    other = [t for n, t in model.named_parameters() if not (t.dim() >= 2 and n.endswith(".weight"))]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=0.1), dict(params=other, weight_decay=0.0)],
                            lr=3e-4, betas=(0.9, 0.99), eps=1e-18)
    x = torch.randint(0, a.vocab, (a.batch, a.seq + 1))
    inp, tgt = x[:, :-1], x[:, 1:]
    times = []
    for step in range(a.warmup + a.steps):
        t = time.perf_counter()
        logits = model(inp)
        loss = F.cross_entropy(logits.view(-1, a.vocab), tgt.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= a.warmup:
            times.append(time.perf_counter() - t)
    step_s = sorted(times)[len(times) // 2]
    print(json.dumps(dict(
        impl="pytorch-" + torch.__version__, arch="rwkv7", threads=a.threads, params=params,
        batch_size=a.batch, seq_len=a.seq, steps=a.steps, step_time_s=step_s,
        tokens_per_s=a.batch * a.seq / step_s,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        loss=float(loss.detach()))))


if __name__ == "__main__":
    main()
