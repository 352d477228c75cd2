"""Plot the story-QA arms: exact match and val loss per arm, plus the
training-loss curves from each run's metrics.jsonl when the run directories
are present.

    python3 experiments/lora/story-qa/plot.py [results.jsonl] [out.png]
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = os.path.dirname(os.path.abspath(__file__))
res_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results.jsonl")
out_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "story-qa.png")
rows = [json.loads(l) for l in open(res_path) if l.strip()]
arms = [r["arm"] for r in rows]
colors = {"base": "tab:gray", "lora-r8": "tab:blue", "lora-r32": "tab:green", "full": "tab:red"}

fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
ax = axes[0]
em = [100 * r["exact_match"] for r in rows]
ax.bar(arms, em, color=[colors.get(a, "k") for a in arms])
for i, v in enumerate(em):
    ax.text(i, v + 0.5, f"{v:.1f}", ha="center")
ax.set_ylabel("exact match on eval (%)")
ax.set_ylim(0, max(em) * 1.15 + 1)
prior = os.path.join(HERE, "prior_baseline.json")
if os.path.exists(prior):
    p = 100 * json.load(open(prior))["prior_exact_match"]
    ax.axhline(p, color="k", ls=":", label=f"story-blind guesser {p:.1f}%")
    ax.set_ylim(0, max(max(em), p) * 1.15 + 1)
    ax.legend(fontsize=8)
ax.set_title(f"story QA exact match ({rows[0]['examples']} questions)")

ax = axes[1]
vl = [r["val_loss"] for r in rows]
ax.bar(arms, vl, color=[colors.get(a, "k") for a in arms])
for i, v in enumerate(vl):
    ax.text(i, v * 1.01, f"{v:.3f}", ha="center")
ax.set_ylabel("val loss (answer tokens)")
ax.set_ylim(0, max(vl) * 1.12)
ax.set_title("val loss on the eval questions")

ax = axes[2]
found = False
for a in arms:
    path = os.path.join(HERE, "runs", f"arm-{a}", "metrics.jsonl")
    if a == "base" or not os.path.exists(path):
        continue
    tr, va = [], []
    for line in open(path):
        m = json.loads(line)
        if m["tag"] == "train/loss":
            tr.append((m["step"], m["value"]))
        elif m["tag"] == "val/loss":
            va.append((m["step"], m["value"]))
    if tr:
        found = True
        ax.plot(*zip(*tr), color=colors.get(a, "k"), alpha=0.7, label=f"{a} train")
    if va:
        ax.plot(*zip(*va), "o--", color=colors.get(a, "k"), label=f"{a} val")
base = [r for r in rows if r["arm"] == "base"]
if base:
    ax.axhline(base[0]["val_loss"], color=colors["base"], ls=":", label="base val")
ax.set_xlabel("step")
ax.set_ylabel("loss (answer tokens)")
ax.set_yscale("log")
ax.set_title("loss curves" if found else "loss curves (run dirs absent)")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(out_path, dpi=110)
print("wrote", out_path)
