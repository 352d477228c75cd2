#!/usr/bin/env python3
"""One JSON line for a finished training run: arm, steps, the last train-time
val loss, wall seconds and peak RSS (GNU time -v), median logged tokens/s.

    record_run.py ARM RUN_DIR TIME_FILE
"""

import json
import re
import statistics
import sys


def main():
    arm, run, tfile = sys.argv[1:4]
    t = open(tfile).read()
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
    wall = 0.0
    for part in re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", t).group(1).split(":"):
        wall = wall * 60 + float(part)
    val, step, rates = None, None, []
    for line in open(run + "/metrics.jsonl"):
        m = json.loads(line)
        if m["tag"] == "val/loss":
            val, step = m["value"], m["step"]
        if m["tag"] == "train/tokens_per_s" and m["step"] > 20:
            rates.append(m["value"])
    print(json.dumps({"train": {"arm": arm, "steps": step, "val_loss": val, "wall_s": wall,
                                "max_rss_mb": rss / 1024,
                                "median_tokens_per_s": statistics.median(rates) if rates else None}}))


if __name__ == "__main__":
    main()
