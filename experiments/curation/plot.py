#!/usr/bin/env python3
"""curation.png: clean held-out loss per arm and seed, and DoReMi's weights over the
proxy run (from its metrics.jsonl) beside the domains' token shares.

    $PY experiments/curation/plot.py    # needs matplotlib; reads results.jsonl and work/
"""

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ARMS = ["unfiltered", "heuristics", "classifier", "perplexity", "random",
        "proportional", "doremi", "proportional-spam", "doremi-spam"]
# DoReMi setups: (name, proxy run, the web domain's key in stats.json).
SETUPS = [("six", "doremi-proxy", "web"), ("spam", "doremi-proxy-spam", "web_spam")]


def main():
    evals = {}
    for line in open(os.path.join(HERE, "results.jsonl")):
        r = json.loads(line)
        if "eval" in r:
            e = r["eval"]
            evals.setdefault(e["arm"], {})[e["seed"]] = e["result"]["loss"]
    fig, (a, *bs) = plt.subplots(1, 3, figsize=(17, 4.8))
    arms = [x for x in ARMS if x in evals]
    for i, arm in enumerate(arms):
        vals = list(evals[arm].values())
        a.scatter([i] * len(vals), vals, color="C0" if i < 5 else "C1", zorder=3)
        a.hlines(sum(vals) / len(vals), i - 0.3, i + 0.3, color="k")
    a.set_xticks(range(len(arms)), arms, rotation=35, ha="right")
    a.set_ylabel("clean held-out loss (nats/char)")
    a.set_title("Same model and tokens per arm (dots: seeds, bar: mean)")
    a.grid(axis="y", alpha=0.3)

    stats = json.load(open(os.path.join(HERE, "work", "stats.json")))["_doremi_chars"]
    for b, (setup, run, web) in zip(bs, SETUPS):
        metrics = os.path.join(HERE, "work", "runs", run, "metrics.jsonl")
        if not os.path.exists(metrics):
            continue
        series = {}
        for line in open(metrics):
            m = json.loads(line)
            if m["tag"].startswith("doremi/average/"):
                series.setdefault(m["tag"].split("/")[-1], []).append((m["step"], m["value"]))
        total = stats["plays_a"] + stats["plays_b"] + stats[web]
        for j, (d, pts) in enumerate(sorted(series.items())):
            share = stats[web if d == "web" else d] / total
            b.plot([p[0] for p in pts], [p[1] for p in pts], color=f"C{j}", label=f"{d}: DoReMi average")
            b.axhline(share, color=f"C{j}", ls="--", label=f"{d}: token share")
        b.set_xlabel("proxy step")
        b.set_ylabel("domain weight")
        b.set_title(f'DoReMi proxy, setup "{setup}": averaged weights vs token shares')
        b.legend(fontsize=8)
        b.grid(alpha=0.3)
    fig.tight_layout()
    out = os.path.join(HERE, "curation.png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
