"""Plot the story-QA arms: the 300-step arms (results.jsonl) and the long
arms (results-long.jsonl, when present) side by side. Panels: exact match per
arm, final val loss per arm, val-loss curves and training-loss curves from
each run's metrics.jsonl (when the run directories are present).

    python3 experiments/lora/story-qa/plot.py [results.jsonl [results-long.jsonl]] [out.png]
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = os.path.dirname(os.path.abspath(__file__))
args = sys.argv[1:]
out_path = args.pop() if args and args[-1].endswith(".png") else os.path.join(HERE, "story-qa.png")
res_paths = args or [os.path.join(HERE, "results.jsonl"), os.path.join(HERE, "results-long.jsonl")]
rows = []
for p in res_paths:
    if os.path.exists(p):
        rows += [json.loads(l) for l in open(p) if l.strip()]
arms = [r["arm"] for r in rows]
base_colors = {"base": "tab:gray", "lora-r8": "tab:blue", "lora-r32": "tab:green", "full": "tab:red"}


def color(arm):
    for k in sorted(base_colors, key=len, reverse=True):
        if arm == k or arm.startswith(k + "-"):
            return base_colors[k]
    return "k"


def is_long(r):
    return r["arm"] != "base" and r["steps"] > 300


def curves(arm):
    path = os.path.join(HERE, "runs", f"arm-{arm}", "metrics.jsonl")
    tr, va = [], []
    if arm == "base" or not os.path.exists(path):
        return tr, va
    for line in open(path):
        m = json.loads(line)
        if m["tag"] == "train/loss":
            tr.append((m["step"], m["value"]))
        elif m["tag"] == "val/loss":
            va.append((m["step"], m["value"]))
    return tr, va


def bars(ax, values, fmt, dy):
    for i, (r, v) in enumerate(zip(rows, values)):
        ax.bar(i, v, color=color(r["arm"]), hatch="//" if is_long(r) else None,
               edgecolor="k" if is_long(r) else None)
        ax.text(i, v + dy(v), fmt(v), ha="center", fontsize=8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(arms, rotation=25, ha="right", fontsize=8)


fig, axes = plt.subplots(2, 2, figsize=(13, 9))
ax = axes[0][0]
em = [100 * r["exact_match"] for r in rows]
bars(ax, em, lambda v: f"{v:.1f}", lambda v: 0.3)
ax.set_ylabel("exact match on eval (%)")
top = max(em)
prior = os.path.join(HERE, "prior_baseline.json")
if os.path.exists(prior):
    p = 100 * json.load(open(prior))["prior_exact_match"]
    ax.axhline(p, color="k", ls=":", label=f"story-blind guesser {p:.1f}%")
    top = max(top, p)
    ax.legend(fontsize=8)
ax.set_ylim(0, top * 1.15 + 1)
ax.set_title(f"story QA exact match ({rows[0]['examples']} questions; hatched = long runs)")

ax = axes[0][1]
vl = [r["val_loss"] for r in rows]
bars(ax, vl, lambda v: f"{v:.3f}", lambda v: v * 0.01)
ax.set_ylabel("val loss (answer tokens)")
ax.set_yscale("log")
ax.set_title("final val loss on the eval questions (log scale)")

ax = axes[1][0]
found = False
for r in rows:
    tr, va = curves(r["arm"])
    if va:
        found = True
        ax.plot(*zip(*va), "o-" if is_long(r) else "s--", color=color(r["arm"]),
                alpha=1.0 if is_long(r) else 0.6, label=f"{r['arm']} ({r['steps']} steps)")
base = [r for r in rows if r["arm"] == "base"]
if base:
    ax.axhline(base[0]["val_loss"], color=base_colors["base"], ls=":", label="base (no FT)")
ax.set_xlabel("step")
ax.set_ylabel("val loss (answer tokens, 600 questions)")
ax.set_yscale("log")
ax.set_title("val-loss curves" if found else "val-loss curves (run dirs absent)")
ax.legend(fontsize=8)

ax = axes[1][1]
found = False
for r in rows:
    tr, _ = curves(r["arm"])
    if tr:
        found = True
        ax.plot(*zip(*tr), color=color(r["arm"]), alpha=0.8 if is_long(r) else 0.35,
                lw=1.2 if is_long(r) else 0.8, label=f"{r['arm']} ({r['steps']} steps)")
ax.set_xlabel("step")
ax.set_ylabel("train loss (answer tokens, every 10th step)")
ax.set_yscale("log")
ax.set_title("training loss (faint: 300-step arms)" if found else "training loss (run dirs absent)")
if found:
    ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(out_path, dpi=100)
print("wrote", out_path)
