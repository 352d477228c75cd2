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
    evals, kept, weights = {}, {}, None
    for line in open(path):
        r = json.loads(line)
        if "eval" in r:
            e = r["eval"]
            evals.setdefault(e["arm"], {})[e["seed"]] = e["result"]["loss"]
        elif "kept" in r:
            kept[r["kept"]["arm"]] = r["kept"]["by_kind"]
        elif "doremi_weights" in r:
            weights = r["doremi_weights"]
    return evals, kept, weights


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results.jsonl")
    evals, kept, weights = load(path)
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
    for arm in ARMS + ["proportional", "doremi"]:
        if arm not in evals:
            continue
        vals = [evals[arm].get(s) for s in seeds]
        mean = statistics.mean(v for v in vals if v is not None)
        delta = f"{mean - base:+.4f}" if base is not None and arm in ARMS else ""
        if arm == "doremi" and "proportional" in evals:
            delta = f"{mean - statistics.mean(evals['proportional'].values()):+.4f} vs proportional"
        cells = " | ".join(f"{v:.4f}" if v is not None else "" for v in vals)
        print(f"| {arm} | {cells} | {mean:.4f} | {delta} |")
    if weights:
        stats = json.load(open(os.path.join(HERE, "work", "stats.json")))["_doremi_chars"]
        total = stats["plays_a"] + stats["plays_b"] + stats["web"]
        print("\n### DoReMi: the proxy's averaged domain weights vs each domain's token share\n")
        print("| domain | token share (proportional mixture) | DoReMi weight |")
        print("|---|---|---|")
        for d in ["plays_a", "plays_b", "web"]:
            print(f"| {d} | {stats[d] / total:.3f} | {weights[d]:.3f} |")
        if "doremi-reference" in evals:
            ref = list(evals["doremi-reference"].values())[0]
            print(f"\nThe reference model's clean held-out loss: {ref:.4f}.")


if __name__ == "__main__":
    main()
