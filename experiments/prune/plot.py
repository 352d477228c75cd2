#!/usr/bin/env python3
"""prune.png: val loss of each pruned model before and after healing.
    python3 experiments/prune/plot.py   (needs matplotlib)"""
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

here = os.path.dirname(os.path.abspath(__file__))
rows = [json.loads(l) for l in open(os.path.join(here, "results.jsonl")) if l.strip()]
E = {r["eval"]["label"]: r["eval"]["result"]["loss"] for r in rows if "eval" in r}
names = ["dense", "magnitude-0.5", "wanda-0.5", "magnitude-2of4", "wanda-2of4"]
names = [n for n in names if n in E]
x = range(len(names))
fig, ax = plt.subplots(figsize=(8, 4.5))
w = 0.27
ax.bar([i - w for i in x], [E[n] for n in names], width=w, label="pruned (dense: as trained)")
ax.bar(list(x), [E.get(n + "-healed", float("nan")) for n in names], width=w,
       label="after 40 healing steps, lr 3e-4 (masks kept)")
if any(n + "-healed-lr1e-4" in E for n in names):
    ax.bar([i + w for i in x], [E.get(n + "-healed-lr1e-4", float("nan")) for n in names], width=w,
           label="after 40 healing steps, lr 1e-4")
ax.set_xticks(list(x))
ax.set_xticklabels(names)
lo = min(E.values())
ax.set_ylim(lo - 0.01, max(E.values()) + 0.01)
ax.set_ylabel("val loss, whole split (nats/token)")
ax.set_title("Pruning the 20.5M Llama: magnitude vs Wanda, 50% and 2:4")
ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(here, "prune.png"), dpi=110)
print("wrote prune.png")
