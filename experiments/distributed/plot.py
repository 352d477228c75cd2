"""Bar charts of scaling.md (tokens/s per arm and round) and memory.md
(per-rank bytes per strategy and N, with rank 0's peak RSS). Needs matplotlib.
  python experiments/distributed/plot.py   # writes scaling.png, memory.png
"""
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

here = Path(__file__).parent


def rows(md):
    out = []
    for line in (here / md).read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 2 and re.match(r"^\d", cells[1] if md == "scaling.md" else cells[0]):
            out.append(cells)
    return out


fig, ax = plt.subplots(figsize=(7, 3.5))
arms = {}
for label, rnd, tps, _ in rows("scaling.md"):
    arms.setdefault(label, []).extend(int(x) for x in tps.split(", "))
for i, (label, values) in enumerate(arms.items()):
    ax.scatter([i] * len(values), values, s=30)
    ax.bar(i, sum(values) / len(values), alpha=0.3)
ax.set_xticks(range(len(arms)), list(arms), fontsize=8)
ax.set_ylabel("tokens/s (bench-8m, 2 cores)")
ax.set_title("2 ranks x 1 thread vs 1 rank x 2 threads (dots: windows of 10 steps)")
fig.tight_layout()
fig.savefig(here / "scaling.png", dpi=120)

fig, ax = plt.subplots(figsize=(7, 3.5))
labels, parts, rss = [], {"params": [], "grads": [], "optimizer": []}, []
for n, strategy, p, g, o, _total, peak, *_ in rows("memory.md"):
    labels.append(f"N={n}\n{strategy}")
    for key, cell in zip(parts, (p, g, o)):
        parts[key].append(float(cell.split()[0]))
    rss.append(float(peak))
bottom = [0.0] * len(labels)
for key, values in parts.items():
    ax.bar(labels, values, bottom=bottom, label=key)
    bottom = [b + v for b, v in zip(bottom, values)]
ax.scatter(labels, rss, color="k", marker="_", s=400, zorder=3, label="rank 0 peak RSS")
ax.set_ylabel("MiB per rank")
ax.set_title("MobileLLM-125M, fp32 AdamW: training state and peak RSS per rank")
ax.legend(fontsize=8)
ax.tick_params(axis="x", labelsize=8)
fig.tight_layout()
fig.savefig(here / "memory.png", dpi=120)
