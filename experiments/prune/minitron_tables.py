#!/usr/bin/env python3
"""The Minitron table and minitron.png from minitron.jsonl.
    python3 experiments/prune/minitron_tables.py   (the plot needs matplotlib)"""
import json
import os
import re

here = os.path.dirname(os.path.abspath(__file__))
rows = [json.loads(l) for l in open(os.path.join(here, "minitron.jsonl")) if l.strip()]
ev = {r["eval"]["label"]: r["eval"]["result"] for r in rows if "eval" in r}
tr = {r["train"]["arm"]: r["train"] for r in rows if "train" in r}


def params(label):
    path = os.path.join(here, "runs", label + ".prune.txt")
    if not os.path.exists(path):
        return ""
    m = re.findall(r"([\d,]+) -> ([\d,]+)", open(path).read())
    return f"{int(m[-1][1].replace(',', '')):,}" if m else ""


dense = ev["dense"]["loss"]
print(f"dense (20.5M, 600 steps): whole-split val loss {dense:.4f}\n")
print("| shape | params | pruned, no healing | pruned + 40 distillation steps | same shape from scratch, 40 steps | healed vs scratch | healed vs dense |")
print("|---|---|---|---|---|---|---|")
for axis in ("width", "depth"):
    name = f"minitron-{axis}"
    if name not in ev:
        continue
    p, h, s = ev[name]["loss"], ev.get(name + "-healed", {}).get("loss"), ev.get(name + "-scratch", {}).get("loss")
    fmt = lambda x: f"{x:.4f}" if x is not None else ""
    hv = f"{h - s:+.4f}" if h is not None and s is not None else ""
    dv = f"{h - dense:+.4f}" if h is not None else ""
    print(f"| {axis} | {params(name)} | {p:.4f} | {fmt(h)} | {fmt(s)} | {hv} | {dv} |")

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    raise SystemExit
fig, a = plt.subplots(figsize=(8, 4.2))
labels = [("pruned, no healing", "", "#999999"), ("pruned + 40 KD steps", "-healed", "#4c72b0"),
          ("scratch, 40 steps", "-scratch", "#c44e52")]
for j, (lab, suffix, color) in enumerate(labels):
    xs, ys = [], []
    for i, axis in enumerate(("width", "depth")):
        v = ev.get(f"minitron-{axis}{suffix}", {}).get("loss")
        if v is not None:
            xs.append(i + (j - 1) * 0.27)
            ys.append(v)
    a.bar(xs, ys, width=0.25, color=color, label=lab)
a.axhline(dense, color="black", ls="--", label=f"unpruned 20.5M ({dense:.3f})")
a.set_xticks([0, 1])
a.set_xticklabels(["width-pruned (11.0M)", "depth-pruned (11.0M)"])
a.set_ylabel("whole-split val loss (nats/token)")
a.set_title("Minitron: prune the 20.5M model to ~half, heal by distillation, vs scratch")
a.legend(fontsize=8)
fig.tight_layout()
fig.savefig(os.path.join(here, "minitron.png"), dpi=110)
print("wrote minitron.png")
