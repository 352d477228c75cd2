#!/usr/bin/env python3
"""Tables for experiments/ssm-blocks/README.md from results*.jsonl and metrics-*.jsonl."""
import json
import os
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))


def bench(path):
    rows = {}
    for line in open(path):
        d = json.loads(line)
        impl = "kiln" if "kiln" in d else "torch-" + d["torch"].get("scan", d["torch"].get("arch", ""))
        r = d["kiln"] if "kiln" in d else d["torch"]
        rows.setdefault((d["seq"], impl), []).append(r)
    print("| seq | implementation | tokens/s (median of rounds) | step s | peak RSS MB |")
    print("|---|---|---|---|---|")
    for (seq, impl), rs in sorted(rows.items()):
        tps = statistics.median(r["tokens_per_s"] for r in rs)
        step = statistics.median(r["step_time_s"] for r in rs)
        rss = max(r["peak_rss_mb"] for r in rs)
        print(f"| {seq} | {impl} | {tps:,.0f} | {step:.2f} | {rss:,.0f} |")


def runs():
    print("| config | params | val loss @500 | @1000 | @2000 | train tokens/s (median) | train s |")
    print("|---|---|---|---|---|---|---|")
    for cfg in ["shakespeare-char", "mamba-shakespeare", "hybrid-shakespeare",
                "rwkv7-shakespeare", "hybrid-rwkv-shakespeare"]:
        p = os.path.join(HERE, f"metrics-{cfg}.jsonl")
        if not os.path.exists(p):
            continue
        val, tps, wall = {}, [], []
        for line in open(p):
            d = json.loads(line)
            if d["tag"] == "val/loss":
                val[d["step"]] = d["value"]
            if d["tag"] == "train/tokens_per_s":
                tps.append(d["value"])
            wall.append(d["wall_time"])
        log = open(os.path.join(HERE, f"train-{cfg}.log")).read()
        params = next((f"{int(l.split()[1]):,}" for l in log.splitlines() if l.startswith("kiln: ")), "?")
        secs = next((l.split(" in ")[1].split(" s ")[0] for l in log.splitlines() if l.startswith("done:")), "?")
        print(f"| {cfg} | {params} | {val.get(500, float('nan')):.3f} | {val.get(1000, float('nan')):.3f} | "
              f"{val.get(2000, float('nan')):.3f} | {statistics.median(tps):,.0f} | {secs} |")


if __name__ == "__main__":
    for f in sorted(os.listdir(HERE)):
        if f.startswith("results") and f.endswith(".jsonl"):
            print(f"\n{f}\n")
            bench(os.path.join(HERE, f))
    print()
    runs()
