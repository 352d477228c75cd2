#!/usr/bin/env python3
"""PyTorch reference for experiments/ssm-blocks: train-step throughput of the
same shapes Kiln benchmarks (bench-mamba.toml, bench-decoder.toml), on CPU.

--arch mamba    transformers.MambaForCausalLM (slow path: conv1d + the sequential
                per-timestep selective scan; mamba_ssm kernels are CUDA-only);
                --scan pscan: the same model with use_mambapy=True (pip mambapy's
                parallel Blelloch scan in PyTorch, the fastest CPU path transformers has)
--arch llama    transformers.LlamaForCausalLM (sdpa attention), the decoder baseline

One step = forward, mean cross-entropy, backward, global-norm clip 1.0, AdamW.
Prints one JSON line: tokens/s (median step), step time, params, peak RSS.

usage: torch_ssm_bench.py --arch mamba [--dim 256 --layers 8 --vocab 8192
                          --seq 256 --batch 8 --steps 5 --warmup 2 --threads 2]
"""
import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, MambaConfig, MambaForCausalLM
from transformers.utils import logging as hf_logging


def build(a):
    if a.arch == "mamba":
        cfg = MambaConfig(vocab_size=a.vocab, hidden_size=a.dim, num_hidden_layers=a.layers,
                          state_size=16, expand=2, conv_kernel=4, tie_word_embeddings=True,
                          use_mambapy=a.scan == "pscan", use_associative_scan=False)
        return MambaForCausalLM(cfg)
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.dim, num_hidden_layers=a.layers,
                      num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                      intermediate_size=a.ffn, max_position_embeddings=a.seq,
                      tie_word_embeddings=True, attn_implementation="sdpa")
    return LlamaForCausalLM(cfg)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", choices=["mamba", "llama"], default="mamba")
    p.add_argument("--scan", choices=["loop", "pscan"], default="loop")
    for k, v in dict(dim=256, layers=8, heads=4, kv_heads=2, ffn=704, vocab=8192,
                     seq=256, batch=8, steps=5, warmup=2, threads=2).items():
        p.add_argument("--" + k.replace("_", "-"), type=int, default=v)
    a = p.parse_args()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = build(a).float().train()
    params = sum(t.numel() for t in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    x = torch.randint(0, a.vocab, (a.batch, a.seq + 1))
    inp, tgt = x[:, :-1], x[:, 1:]
    times = []
    for step in range(a.warmup + a.steps):
        t = time.perf_counter()
        logits = model(input_ids=inp, use_cache=False).logits
        loss = F.cross_entropy(logits.view(-1, a.vocab), tgt.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= a.warmup:
            times.append(time.perf_counter() - t)
    step_s = sorted(times)[len(times) // 2]
    print(json.dumps(dict(
        impl="pytorch-" + torch.__version__, arch=a.arch, scan=a.scan, threads=a.threads, params=params,
        batch_size=a.batch, seq_len=a.seq, steps=a.steps, step_time_s=step_s,
        tokens_per_s=a.batch * a.seq / step_s,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        loss=float(loss))))


if __name__ == "__main__":
    main()
