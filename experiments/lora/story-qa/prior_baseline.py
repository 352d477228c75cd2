"""Exact match of a context-free guesser: for each eval question, answer the
training answer seen most often with that exact question line (else the most
common answer overall). A model that does not read the story cannot be
expected to beat this by much.

    python3 experiments/lora/story-qa/prior_baseline.py [QA_DIR]
"""
import collections
import json
import os
import sys

d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs", "qa")
load = lambda f: [json.loads(l) for l in open(os.path.join(d, f))]
train, ev = load("train.jsonl"), load("eval.jsonl")
q = lambda r: r["prompt"].split("\n")[-1]
by_q = collections.defaultdict(collections.Counter)
for r in train:
    by_q[q(r)][r["response"]] += 1
overall = collections.Counter(r["response"] for r in train).most_common(1)[0][0]
hit = sum((by_q[q(r)].most_common(1)[0][0] if q(r) in by_q else overall) == r["response"] for r in ev)
print(json.dumps({"prior_exact_match": hit / len(ev), "correct": hit, "examples": len(ev),
                  "eval_questions_seen_in_train": sum(q(r) in by_q for r in ev)}))
