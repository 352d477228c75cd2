#!/usr/bin/env python3
"""The README table from results.jsonl.  python3 experiments/prune/tables.py"""
import json
import os
import re

here = os.path.dirname(os.path.abspath(__file__))
rows = [json.loads(l) for l in open(os.path.join(here, "results.jsonl")) if l.strip()]
E = {r["eval"]["label"]: r["eval"]["result"] for r in rows if "eval" in r}
P = {r["prune"]["label"]: r["prune"]["report"] for r in rows if "prune" in r}


def loss(label, dom=None):
    e = E.get(label)
    if e is None:
        return float("nan")
    return e["loss"] if dom is None else e["domains"][dom]["loss"]


low = "dense-healed-lr1e-4" in E
head = "| model | sparsity (of pruned projections) | val loss (all) | shakespeare | stories | vs dense | after 40 healing steps (lr 3e-4) | vs dense + the same steps |"
sep = "|---|---|---|---|---|---|---|---|"
if low:
    head += " after 40 steps at lr 1e-4 | vs dense + the same steps |"
    sep += "---|---|"
print(head)
print(sep)


def healed(name):
    cells = f" {loss(name + '-healed'):.4f} | "
    cells += "" if name == "dense" else f"{loss(name + '-healed') - loss('dense-healed'):+.4f}"
    cells += " |"
    if low:
        cells += f" {loss(name + '-healed-lr1e-4'):.4f} | "
        cells += "" if name == "dense" else f"{loss(name + '-healed-lr1e-4') - loss('dense-healed-lr1e-4'):+.4f}"
        cells += " |"
    return cells


print(f"| dense | 0 | {loss('dense'):.4f} | {loss('dense', 'shakespeare'):.4f} | {loss('dense', 'stories'):.4f} |  |" + healed("dense"))
for name in ("magnitude-0.5", "wanda-0.5", "magnitude-2of4", "wanda-2of4"):
    if name not in E:
        continue
    m = re.search(r"total[^\n]*?([\d.]+)%", P.get(name, ""))
    sp = f"{m.group(1)}%" if m else "?"
    print(f"| {name} | {sp} | {loss(name):.4f} | {loss(name, 'shakespeare'):.4f} | {loss(name, 'stories'):.4f} | "
          f"{loss(name) - loss('dense'):+.4f} |" + healed(name))
