#!/usr/bin/env python3
"""distill.png: each arm's val loss per seed, and the train-time val curves.
    python3 experiments/distill/plot.py   (needs matplotlib)"""
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

here = os.path.dirname(os.path.abspath(__file__))
rows = [json.loads(l) for l in open(os.path.join(here, "results.jsonl")) if l.strip()]
E = [r["eval"] for r in rows if "eval" in r and r["eval"]["arm"] != "teacher"]
arms = [a for a in ["scratch", "forward-kl", "reverse-kl", "skew-kl", "cache-kl", "cache-topk"]
        if any(e["arm"] == a for e in E)]
colors = dict(zip(["scratch", "forward-kl", "reverse-kl", "skew-kl", "cache-kl", "cache-topk"],
                  ["#c44e52", "#4c72b0", "#55a868", "#8172b2", "#dd8452", "#937860"]))
fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
for i, arm in enumerate(arms):
    ys = [e["result"]["loss"] for e in E if e["arm"] == arm]
    a.scatter([i] * len(ys), ys, color=colors[arm], s=40)
a.set_xticks(range(len(arms)))
a.set_xticklabels(arms)
a.set_ylabel("val loss, whole split (nats/token)")
a.set_title("3.15M student, 300 steps: scratch vs distilled from a 20.5M teacher")
for arm in arms:
    for seed_dir in sorted(os.listdir(os.path.join(here, "runs"))):
        if not seed_dir.startswith(arm + "-s") or seed_dir.endswith((".out", ".time")):
            continue
        pts = [(m["step"], m["value"]) for m in map(json.loads, open(os.path.join(here, "runs", seed_dir, "metrics.jsonl")))
               if m["tag"] == "val/loss"]
        b.plot([p[0] for p in pts], [p[1] for p in pts], color=colors[arm], alpha=0.8,
               label=arm if seed_dir.endswith("1337") else None)
b.set_xlabel("step")
b.set_ylabel("train-time val loss (8 batches per domain, domain mean)")
b.legend()
fig.tight_layout()
fig.savefig(os.path.join(here, "distill.png"), dpi=110)
print("wrote distill.png")
