#!/usr/bin/env python3
"""The README tables from results.jsonl (and cross_arch.jsonl, bench.jsonl when
present).  python3 experiments/distill/tables.py"""
import json
import os
import statistics

here = os.path.dirname(os.path.abspath(__file__))


def load(name):
    path = os.path.join(here, name)
    return [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []


rows = load("results.jsonl") + load("cross_arch.jsonl")
E = [r["eval"] for r in rows if "eval" in r]
T = {r["train"]["arm"]: r["train"] for r in rows if "train" in r}
loss = {(e["arm"], e["seed"]): e["result"]["loss"] for e in E}


def base(arm):
    return "mamba-scratch" if arm.startswith("mamba") else "scratch"


print("| arm | seed | val loss (all) | shakespeare | stories | vs scratch (same seed, same architecture) | vs forward-kl (same seed) | train wall s | median tokens/s |")
print("|---|---|---|---|---|---|---|---|---|")
for e in E:
    r, arm, seed = e["result"], e["arm"], e["seed"]
    d = r.get("domains", {})
    b = loss.get((base(arm), seed))
    vs = "" if arm in ("scratch", "mamba-scratch", "teacher") or b is None else f"{r['loss'] - b:+.4f}"
    f = loss.get(("forward-kl", seed))
    vf = f"{100 * (r['loss'] - f) / f:+.2f}%" if arm.startswith("cache") and f else ""
    t = T.get(f"{arm}-s{seed}", {})
    wall = f"{t['wall_s']:.0f}" if t else ""
    tps = f"{t['median_tokens_per_s']:.0f}" if t and t.get("median_tokens_per_s") else ""
    print(f"| {arm} | {seed} | {r['loss']:.4f} | {d.get('shakespeare', {}).get('loss', float('nan')):.4f} | "
          f"{d.get('stories', {}).get('loss', float('nan')):.4f} | {vs} | {vf} | {wall} | {tps} |")

print("\n| arm | seeds | mean val loss | mean vs scratch |")
print("|---|---|---|---|")
for arm in ("scratch", "forward-kl", "reverse-kl", "skew-kl", "cache-kl", "cache-topk",
            "mamba-scratch", "mamba-forward-kl"):
    xs = [e for e in E if e["arm"] == arm]
    if not xs:
        continue
    m = statistics.mean(e["result"]["loss"] for e in xs)
    diffs = [e["result"]["loss"] - loss[(base(arm), e["seed"])] for e in xs if (base(arm), e["seed"]) in loss]
    print(f"| {arm} | {len(xs)} | {m:.4f} | {statistics.mean(diffs):+.4f} |")

for r in rows:
    if "cache" in r:
        c = r["cache"]
        print(f"\ncache: {c['tokens']:,} tokens (top-{c['top_k']} + {c['samples']} sampled ids per position), "
              f"{c['bytes_per_token']:.1f} bytes/token, {c['wall_s']:.0f} s wall to build")

B = [r["bench"] for r in load("bench.jsonl")]
if B:
    print("\n| arm | rounds | median step s | median tokens/s | vs forward-kl step |")
    print("|---|---|---|---|---|")
    med = {}
    for arm in ("scratch", "forward-kl", "cache-kl"):
        xs = [b["result"] for b in B if b["arm"] == arm]
        if xs:
            med[arm] = (statistics.median(x["step_time_s"] for x in xs), statistics.median(x["tokens_per_s"] for x in xs), len(xs))
    for arm, (s, tps, n) in med.items():
        rel = f"{s / med['forward-kl'][0]:.2f}x" if "forward-kl" in med else ""
        print(f"| {arm} | {n} | {s:.3f} | {tps:.0f} | {rel} |")
