#!/usr/bin/env python3
"""qat-20m.png: val loss per arm (whole split, both domains) and the
fine-tune arms' training-loss curves.
    python3 experiments/qat-20m/plot.py   (needs matplotlib)"""
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

here = os.path.dirname(os.path.abspath(__file__))
rows = [json.loads(l) for l in open(os.path.join(here, "results.jsonl")) if l.strip()]
E = {r["eval"]["label"]: r["eval"] for r in rows if "eval" in r}

fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
labels = [l for l in ("fp32", "ptq", "fp32-ft", "ptq-ft", "qat", "qat-distill") if l in E]
colors = {"fp32": "#4c72b0", "ptq": "#c44e52", "fp32-ft": "#4c72b0", "ptq-ft": "#c44e52",
          "qat": "#55a868", "qat-distill": "#8172b2"}
vals = [E[l]["loss"] for l in labels]
a.bar(labels, vals, color=[colors[l] for l in labels])
lo = min(vals)
a.set_ylim(lo - 0.02, max(vals) + 0.01)
for i, v in enumerate(vals):
    a.text(i, v + 0.001, f"{v:.4f}", ha="center", fontsize=8)
a.set_ylabel("val loss (nats/token, whole split)")
a.set_title("20M Llama, BPE 4096: fp32 vs q4_0 PTQ vs q4_0 QAT")

for arm, c in (("fp-ft", "#4c72b0"), ("qat", "#55a868"), ("qat-distill", "#8172b2")):
    path = os.path.join(here, "runs", arm, "metrics.jsonl")
    if not os.path.exists(path):
        continue
    pts = [(m["step"], m["value"]) for m in map(json.loads, open(path)) if m["tag"] == "train/loss"]
    b.plot([p[0] for p in pts], [p[1] for p in pts], label=arm, color=c)
b.set_xlabel("fine-tune step (from the 600-step fp checkpoint)")
b.set_ylabel("train loss (logged; qat-distill: the mixed KD + CE objective)")
b.legend()
b.set_title("fine-tune arms, same batches")
fig.tight_layout()
fig.savefig(os.path.join(here, "qat-20m.png"), dpi=110)
print("wrote qat-20m.png")
