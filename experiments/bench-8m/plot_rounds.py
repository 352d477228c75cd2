#!/usr/bin/env python3
"""Tokens/s per round of a run.sh results file (kiln, PyTorch, and the older
kiln when run with KILN_BEFORE), as grouped bars, with the kiln/PyTorch
ratio of each round written above its group.

usage: plot_rounds.py RESULTS.jsonl OUT.png [TITLE]
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ARMS = [("kiln_before", "kiln before"), ("kiln", "kiln"), ("torch", "PyTorch eager")]


def main():
    src, out = sys.argv[1], sys.argv[2]
    title = sys.argv[3] if len(sys.argv) > 3 else "8M Llama train step, 2 CPU cores"
    rounds = {}
    for line in open(src):
        row = json.loads(line)
        arm = next(k for k in row if k != "round")
        rounds.setdefault(row["round"], {})[arm] = row[arm]["tokens_per_s"]
    arms = [(k, label) for k, label in ARMS if any(k in r for r in rounds.values())]
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(9.5, 4))
    for i, (key, label) in enumerate(arms):
        xs = [r + (i - (len(arms) - 1) / 2) * width for r in sorted(rounds)]
        ax.bar(xs, [rounds[r].get(key, 0) for r in sorted(rounds)], width, label=label)
    for r in sorted(rounds):
        d = rounds[r]
        text = " / ".join(
            f"{d[k] / d['torch']:.2f}x" for k in ("kiln_before", "kiln") if k in d
        )
        ax.text(r, max(d.values()) * 1.01, text, ha="center", fontsize=8)
    ax.set_xlabel("round (arms alternate within a round)")
    ax.set_ylabel("tokens/s")
    ax.set_xticks(sorted(rounds))
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main()
