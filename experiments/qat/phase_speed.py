#!/usr/bin/env python3
"""Training throughput of the 1000-step runs before and after QAT switches on
(start_step 500), from the tok/s kiln logs every 20 steps in each run's train.log.
The fp run is split at the same step, so the ratio is QAT phase / same steps in fp.
    python3 experiments/qat/phase_speed.py > experiments/qat/phase_speed.jsonl"""
import json, os, re, statistics

R = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs")
for name in ("fp", "qat-q4_0", "qat-int4", "d64-fp", "d64-qat-q4_0", "d64-qat-int4"):
    p = os.path.join(R, name, "train.log")
    if not os.path.exists(p):
        continue
    tps = [(int(s), float(t)) for s, t in
           re.findall(r"^step (\d+) loss .* tok/s (\d+)", open(p).read(), re.M)]
    before = [t for s, t in tps if 40 <= s <= 500]
    after = [t for s, t in tps if s > 520]
    print(json.dumps({"run": name, "median_tokens_per_s_steps_40_500": statistics.median(before),
                      "median_tokens_per_s_steps_540_1000": statistics.median(after),
                      "after_over_before": statistics.median(after) / statistics.median(before)}))
