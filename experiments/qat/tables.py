#!/usr/bin/env python3
"""The README's tables (markdown) from results.jsonl [and phase_speed.jsonl].
    python3 experiments/qat/tables.py"""
import json, os, statistics

here = os.path.dirname(os.path.abspath(__file__))
rows = [json.loads(l) for l in open(os.path.join(here, "results.jsonl")) if l.strip()]
E = {(r["model"], r["arm"], r["method"], r["format"]): r for r in rows if r["kind"] == "eval"}
T = {r["arm"]: r for r in rows if r["kind"] == "train"}

print("### Validation loss / perplexity (whole val split, 120,356 tokens, windows of 64)\n")
print("| model | weight format | activations | arm | how | val loss | val ppl | loss vs fp32 | `kiln eval` command |")
print("|---|---|---|---|---|---|---|---|---|")
spec = [
    ("fp32", "float", "fp", "fp32", "fp32"),
    ("q4_0", "q8_0", "fp", "ptq", "q4_0+q8_0act"),
    ("q4_0", "float", "fp", "ptq", "q4_0"),
    ("q4_0", "q8_0", "qat-q4_0", "qat", "q4_0+q8_0act"),
    ("int4 per channel", "float", "fp", "ptq", "int4-channel"),
    ("int4 per channel", "float", "qat-int4", "qat", "int4-channel"),
    ("int4 group 32", "float", "fp", "ptq", "int4-g32"),
    ("int4 group 32", "float", "qat-int4", "qat-then-ptq", "int4-g32"),
]
for model in ("d128", "d64"):
    fp = E.get((model, "fp", "fp32", "fp32"))
    if not fp:
        continue
    for wf, act, arm, method, fmt in spec:
        r = E.get((model, arm, method, fmt))
        if not r:
            continue
        how = {"fp32": "float", "ptq": "PTQ of fp run", "qat": "QAT run (from step 500)",
               "qat-then-ptq": "QAT int4-ch run, eval g32"}[method]
        run = ("" if model == "d128" else "d64-") + arm
        cmd = f"kiln eval runs/{run} {r['args']}".strip()
        d = r["eval"]["loss"] - fp["eval"]["loss"]
        rel = 100 * d / fp["eval"]["loss"]
        delta = "" if method == "fp32" else f"{d:+.4f} ({rel:+.1f}%)"
        print(f"| {model} | {wf} | {act} | {run} | {how} | {r['eval']['loss']:.4f} | {r['eval']['ppl']:.4f} | "
              f"{delta} | `{cmd}` |")

print("\n### Training runs (1000 steps, 1,024,000 tokens, seed 1337)\n")
print("| run | params | train seconds (loaded 2-core CPU) | final train-time val loss (10 batches) |")
print("|---|---|---|---|")
for r in rows:
    if r["kind"] == "train":
        c = next(x for x in rows if x["kind"] == "curve" and x["arm"] == r["arm"])
        print(f"| {r['arm']} | {r['params']:,} | {r['train_seconds']} | {c['points'][-1][1]:.4f} |")

print("\n### llama.cpp runs the GGUFs (192-character story, 3 rows of 64)\n")
print("| GGUF | file bytes | kiln eval logits from | kiln ppl | llama.cpp ppl | mean KL(kiln‖llama.cpp) | max abs logit diff | argmax agree | checker (tol 5e-2) |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    if r["kind"] == "gguf":
        c = r["check"]
        run = "runs/qat-q4_0" if r["name"].startswith("qat") else "runs/fp"
        src = f"{run} `{r['kiln_args']}`" if r["kiln_args"] else f"{run} (" + ("its own [quantize])" if run.endswith("q4_0") else "float)")
        print(f"| {r['name']}.gguf ({r['gguf_format']}) | {r['bytes']:,} | {src} | {c.get('kiln_ppl', float('nan')):.4f} | "
              f"{c.get('llamacpp_ppl', float('nan')):.4f} | {c.get('kl', float('nan')):.2e} | "
              f"{c.get('max_abs_diff', float('nan')):.2e} | {c.get('argmax_agree')}/{c.get('argmax_n')} | "
              f"{'OK' if c.get('ok') else 'FAIL'} |")

print("\n### QAT step cost\n")
B = [r for r in rows if r["kind"] == "bench"]
if B:
    print("`kiln bench CONFIG --steps 5 --warmup 2 --data run` (QAT configs with `--set quantize.start_step=0`), median step:\n")
    print("| round | fp tokens/s | qat-q4_0 tokens/s | qat-int4 tokens/s | q4_0 slowdown (fp/qat) | int4 slowdown | qat-q4_0 fwd / bwd / optim (s) |")
    print("|---|---|---|---|---|---|---|")
    rounds = sorted({r["round"] for r in B})
    tot = {"fp": [], "qat-q4_0": [], "qat-int4": []}
    for k in rounds:
        b = {r["arm"]: r["bench"] for r in B if r["round"] == k}
        for a in tot:
            tot[a].append(b[a]["tokens_per_s"])
        q = b["qat-q4_0"]
        print(f"| {k} | {b['fp']['tokens_per_s']:.0f} | {q['tokens_per_s']:.0f} | {b['qat-int4']['tokens_per_s']:.0f} | "
              f"{b['fp']['tokens_per_s'] / q['tokens_per_s']:.2f} | {b['fp']['tokens_per_s'] / b['qat-int4']['tokens_per_s']:.2f} | "
              f"{q['forward_s']:.3f} / {q['backward_s']:.3f} / {q['optimizer_s']:.3f} |")
    s = {a: sum(v) for a, v in tot.items()}
    print(f"| all | {s['fp'] / len(rounds):.0f} | {s['qat-q4_0'] / len(rounds):.0f} | {s['qat-int4'] / len(rounds):.0f} | "
          f"{s['fp'] / s['qat-q4_0']:.2f} | {s['fp'] / s['qat-int4']:.2f} | |")
    fpb = [r["bench"] for r in B if r["arm"] == "fp"][0]
    print(f"\n(fp fwd / bwd / optim: {fpb['forward_s']:.3f} / {fpb['backward_s']:.3f} / {fpb['optimizer_s']:.3f} s, round 1.)")
S = [r for r in rows if r["kind"] == "train_speed"]
if S:
    print("\nCross-check, `kiln train` 200 steps (QAT from step 0), median logged tok/s over steps 40-200:\n")
    print("| round | fp | qat-q4_0 | qat-int4 | q4_0 slowdown | int4 slowdown |")
    print("|---|---|---|---|---|---|")
    tot = {"fp": [], "qat-q4_0": [], "qat-int4": []}
    for k in sorted({r["round"] for r in S}):
        m = {r["arm"]: r["median_tokens_per_s"] for r in S if r["round"] == k}
        for a in tot:
            tot[a].append(m[a])
        print(f"| {k} | {m['fp']:.0f} | {m['qat-q4_0']:.0f} | {m['qat-int4']:.0f} | "
              f"{m['fp'] / m['qat-q4_0']:.2f} | {m['fp'] / m['qat-int4']:.2f} |")
    s = {a: sum(v) for a, v in tot.items()}
    print(f"| all | | | | {s['fp'] / s['qat-q4_0']:.2f} | {s['fp'] / s['qat-int4']:.2f} |")
p = os.path.join(here, "phase_speed.jsonl")
if os.path.exists(p):
    print("\nWithin the 1000-step runs (`phase_speed.py`): median logged tok/s, steps 40-500 vs 540-1000 (QAT on from 500):\n")
    print("| run | steps 40-500 | steps 540-1000 | ratio |")
    print("|---|---|---|---|")
    for l in open(p):
        r = json.loads(l)
        print(f"| {r['run']} | {r['median_tokens_per_s_steps_40_500']:.0f} | {r['median_tokens_per_s_steps_540_1000']:.0f} | {r['after_over_before']:.2f} |")
p = os.path.join(here, "bench-activations.jsonl")
if os.path.exists(p):
    print("\nWhere the q4_0 cost goes (`bench-activations.jsonl`; `kiln bench`, QAT from step 0, with and without "
          "`--set quantize.activations=none`), tokens/s and forward / backward seconds of the median step:\n")
    print("| round | fp | qat-q4_0 weights only | qat-q4_0 + q8_0 activations |")
    print("|---|---|---|---|")
    B = [json.loads(l) for l in open(p)]
    tot = {}
    for k in sorted({r["round"] for r in B}):
        m = {r["arm"]: r["bench"] for r in B if r["round"] == k}
        for a, b in m.items():
            tot.setdefault(a, []).append(b["tokens_per_s"])
        cell = lambda b: f"{b['tokens_per_s']:.0f} ({b['forward_s']:.3f} / {b['backward_s']:.3f})"
        print(f"| {k} | {cell(m['fp'])} | {cell(m['qat-q4_0-weights-only'])} | {cell(m['qat-q4_0'])} |")
    fp = sum(tot["fp"])
    print(f"| all: fp / arm tokens/s | 1 | {fp / sum(tot['qat-q4_0-weights-only']):.2f} | {fp / sum(tot['qat-q4_0']):.2f} |")
    fp = sum(tot["fp"][1:])
    print(f"| rounds 2-4 | 1 | {fp / sum(tot['qat-q4_0-weights-only'][1:]):.2f} | {fp / sum(tot['qat-q4_0'][1:]):.2f} |")
