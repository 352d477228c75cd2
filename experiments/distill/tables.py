#!/usr/bin/env python3
"""The README tables from results.jsonl.  python3 experiments/distill/tables.py"""
import json
import os
import statistics

here = os.path.dirname(os.path.abspath(__file__))
rows = [json.loads(l) for l in open(os.path.join(here, "results.jsonl")) if l.strip()]
E = [r["eval"] for r in rows if "eval" in r]
T = {r["train"]["arm"]: r["train"] for r in rows if "train" in r}

print("| arm | seed | val loss (all) | shakespeare | stories | vs scratch (same seed) | train wall s | median tokens/s |")
print("|---|---|---|---|---|---|---|---|")
scratch = {e["seed"]: e["result"]["loss"] for e in E if e["arm"] == "scratch"}
for e in E:
    r = e["result"]
    d = r.get("domains", {})
    vs = "" if e["arm"] in ("scratch", "teacher") or e["seed"] not in scratch else f"{r['loss'] - scratch[e['seed']]:+.4f}"
    t = T.get(f"{e['arm']}-s{e['seed']}", {})
    wall = f"{t['wall_s']:.0f}" if t else ""
    tps = f"{t['median_tokens_per_s']:.0f}" if t and t.get("median_tokens_per_s") else ""
    print(f"| {e['arm']} | {e['seed']} | {r['loss']:.4f} | {d.get('shakespeare', {}).get('loss', float('nan')):.4f} | "
          f"{d.get('stories', {}).get('loss', float('nan')):.4f} | {vs} | {wall} | {tps} |")

print("\n| arm | seeds | mean val loss | mean vs scratch |")
print("|---|---|---|---|")
for arm in ("scratch", "forward-kl", "reverse-kl", "skew-kl"):
    xs = [e for e in E if e["arm"] == arm]
    if not xs:
        continue
    m = statistics.mean(e["result"]["loss"] for e in xs)
    diffs = [e["result"]["loss"] - scratch[e["seed"]] for e in xs if e["seed"] in scratch]
    print(f"| {arm} | {len(xs)} | {m:.4f} | {statistics.mean(diffs):+.4f} |")
