#!/usr/bin/env python3
"""Markdown tables from experiments/curation/results.jsonl (run.sh's stdout).

    python3 experiments/curation/tables.py [results.jsonl] > experiments/curation/results.md
"""

import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ARMS = ["unfiltered", "heuristics", "classifier", "perplexity", "random"]
KINDS = ["clean", "salad", "shuffled", "boilerplate", "repeated", "mojibake", "random"]


def load(path):
    evals, kept, weights, kinds = {}, {}, {}, {}
    for line in open(path):
        r = json.loads(line)
        if "eval" in r:
            e = r["eval"]
            evals.setdefault(e["arm"], {})[e["seed"]] = e["result"]["loss"]
        elif "kept" in r:
            kept[r["kept"]["arm"]] = r["kept"]["by_kind"]
        elif "doremi_weights" in r:
            weights[r.get("setup", "six")] = r["doremi_weights"]
        elif "kind_loss" in r:
            kinds[r["kind_loss"]["kind"]] = r["kind_loss"]["result"]["loss"]
    return evals, kept, weights, kinds


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results.jsonl")
    evals, kept, weights, kinds = load(path)
    print("### What each arm kept (documents; characters of text)\n")
    print("| arm | " + " | ".join(KINDS) + " | clean share of kept text |")
    print("|---|" + "---|" * (len(KINDS) + 1))
    for arm in ARMS:
        k = kept.get(arm, {})
        cells = [f"{k.get(x, [0, 0])[0]}" for x in KINDS]
        chars = sum(v[1] for v in k.values()) or 1
        share = k.get("clean", [0, 0])[1] / chars
        print(f"| {arm} | " + " | ".join(cells) + f" | {share:.1%} of {chars:,} |")
    print("\n### Clean held-out loss (nats per character), same model and tokens\n")
    seeds = sorted({s for a in evals.values() for s in a})
    print("| arm | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | vs unfiltered |")
    print("|---|" + "---|" * (len(seeds) + 2))
    base = statistics.mean(evals["unfiltered"].values()) if "unfiltered" in evals else None
    for arm in ARMS + [p + s for s in ["", "-spam"] for p in ["proportional", "doremi"]]:
        if arm not in evals:
            continue
        vals = [evals[arm].get(s) for s in seeds]
        mean = statistics.mean(v for v in vals if v is not None)
        delta = f"{mean - base:+.4f}" if base is not None and arm in ARMS else ""
        prop = arm.replace("doremi", "proportional")
        if arm.startswith("doremi") and prop in evals:
            paired = [evals[arm][s] - evals[prop][s] for s in seeds if s in evals[arm] and s in evals[prop]]
            per_seed = ", ".join(f"{d:+.4f}" for d in paired)
            delta = f"{mean - statistics.mean(evals[prop].values()):+.4f} vs {prop} (per seed {per_seed})"
        cells = " | ".join(f"{v:.4f}" if v is not None else "" for v in vals)
        print(f"| {arm} | {cells} | {mean:.4f} | {delta} |")
    stats = json.load(open(os.path.join(HERE, "work", "stats.json")))["_doremi_chars"]
    for setup, web, sfx in [("six", "web", ""), ("spam", "web_spam", "-spam")]:
        if setup not in weights:
            continue
        total = stats["plays_a"] + stats["plays_b"] + stats[web]
        noise = stats[f"{web}_noise_share"]
        print(f"\n### DoReMi, setup \"{setup}\": the proxy's averaged domain weights vs each domain's token share\n")
        print(f"The web domain is `doremi/{web}.jsonl`, {noise:.0%} noise by characters.\n")
        print("| domain | token share (proportional mixture) | DoReMi weight | weight / share |")
        print("|---|---|---|---|")
        for d, key in [("plays_a", "plays_a"), ("plays_b", "plays_b"), ("web", web)]:
            share = stats[key] / total
            print(f"| {d} | {share:.3f} | {weights[setup][d]:.3f} | {weights[setup][d] / share:.2f} |")
        ref = evals.get(f"doremi-reference{sfx}")
        if ref:
            print(f"\nThe reference model's clean held-out loss: {list(ref.values())[0]:.4f}.")
    if kinds:
        print("\n### The \"six\" reference model's loss per kind of web document (nats per character)\n")
        print("| " + " | ".join(k for k in KINDS if k in kinds) + " |")
        print("|" + "---|" * len([k for k in KINDS if k in kinds]))
        print("| " + " | ".join(f"{kinds[k]:.3f}" for k in KINDS if k in kinds) + " |")


if __name__ == "__main__":
    main()
