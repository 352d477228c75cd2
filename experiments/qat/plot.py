#!/usr/bin/env python3
"""qat.png from results.jsonl: val ppl per arm grouped by weight format (one panel
per model width), and the val-loss curves of the fp32 and QAT runs (QAT from step 500).
    python plot.py [results.jsonl] [qat.png]      (python3 + matplotlib)"""
import json, os, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

here = os.path.dirname(os.path.abspath(__file__))
res = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "results.jsonl")
out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "qat.png")
rows = [json.loads(l) for l in open(res) if l.strip()]
evals = {(r["model"], r["arm"], r["method"], r["format"]): r["eval"] for r in rows if r["kind"] == "eval"}
curves = {(r["model"], r["arm"]): r["points"] for r in rows if r["kind"] == "curve"}
params = {r["model"]: r["params"] for r in rows if r["kind"] == "train" and r["arm"].endswith("fp")}
models = [m for m in ("d128", "d64") if (m, "fp", "fp32", "fp32") in evals]

groups = [  # (format label, [(bar label, key)])
    ("q4_0 weights\n+ q8_0 activations", [("PTQ", ("fp", "ptq", "q4_0+q8_0act")),
                                          ("QAT", ("qat-q4_0", "qat", "q4_0+q8_0act"))]),
    ("int4 per channel", [("PTQ", ("fp", "ptq", "int4-channel")),
                          ("QAT", ("qat-int4", "qat", "int4-channel"))]),
    ("int4 group 32", [("PTQ", ("fp", "ptq", "int4-g32")),
                       ("QAT-ch\n+PTQ g32", ("qat-int4", "qat-then-ptq", "int4-g32"))]),
]
colors = {"PTQ": "tab:orange", "QAT": "tab:green"}
fig, axes = plt.subplots(1, len(models) + 1, figsize=(6 * (len(models) + 1), 4.8))
for a, model in zip(axes, models):
    fp = evals[(model, "fp", "fp32", "fp32")]["ppl"]
    vals = [fp]
    x, ticks, labels = 0, [], []
    for name, bars in groups:
        x0 = x
        for lab, key in bars:
            k = (model,) + key
            if k not in evals:
                continue
            v = evals[k]["ppl"]
            vals.append(v)
            a.bar(x, v - 1, bottom=1, color=colors.get(lab, "tab:olive"), width=0.8)
            a.text(x, v, f"{v:.4f}", ha="center", va="bottom", fontsize=8)
            ticks.append(x); labels.append(lab)
            x += 1
        a.annotate(name, ((x0 + x - 1) / 2, 0), xycoords=("data", "axes fraction"), xytext=(0, -30),
                   textcoords="offset points", ha="center", va="top", fontsize=8)
        x += 0.7
    a.axhline(fp, color="tab:blue", ls="--", label=f"fp32 baseline {fp:.4f}")
    a.set_xticks(ticks, labels, fontsize=8)
    a.set_ylabel("val perplexity (char level)")
    lo, hi = min(vals), max(vals)
    a.set_ylim(lo - 0.3 * (hi - lo) - 0.002, hi + 0.15 * (hi - lo) + 0.002)
    a.legend(fontsize=8, loc="upper left")
    a.set_title(f"{model} ({params.get(model, 0):,} params): val ppl after 1000 steps\n"
                "(PTQ of the fp run vs QAT run, quantised evaluation)", fontsize=9)

b = axes[-1]
for model, ls in (("d128", "-"), ("d64", "--")):
    for arm, c in (("fp", "tab:blue"), ("qat-q4_0", "tab:green"), ("qat-int4", "tab:red")):
        name = arm if model == "d128" else f"d64-{arm}"
        if (model, name) in curves:
            s, v = zip(*curves[(model, name)])
            b.plot(s, v, ls=ls, marker=".", color=c, label=f"{model} {arm}")
b.axvline(500, color="grey", ls=":", label="QAT start_step = 500")
b.set_yscale("log")
b.set_xlim(300, 1020)
b.set_ylim(None, 0.8)
b.set_xlabel("step"); b.set_ylabel("val loss (10 batches; QAT runs fake-quantised)")
b.legend(fontsize=7)
b.set_title("val loss during training (steps 300-1000)", fontsize=9)
fig.tight_layout()
fig.subplots_adjust(bottom=0.2)
fig.savefig(out, dpi=110)
print("wrote", out)
