"""Memory table of experiments/distributed/memory.sh: rank 0's logged
per-rank bytes beside the formulas (fp32 AdamW, Psi parameters).

Kiln's own figures, fp32 (every rank keeps the f32 model it computes with):
  ddp:   params 4 Psi, grads 4 Psi,   optimizer 8 Psi              = 16 Psi
  zero1: params 4 Psi + master 4 Psi/N, grads 4 Psi, optimizer 8 Psi/N
  zero2: params 4 Psi + master 4 Psi/N, grads 4 Psi/N, optimizer 8 Psi/N
  zero3: params master 4 Psi/N (+ one placeholder value per tensor),
         grads 4 Psi/N, optimizer 8 Psi/N                     = 16 Psi/N
(zero3's full parameters exist only while a micro-batch runs: gathered
for its forward, held by the graph until its backward, then dropped),
(the backward's own per-micro-batch gradients, 4 Psi, come on top in every
strategy: burn's autodiff produces them all at once).
"""
import re
import sys
from pathlib import Path

out = Path(sys.argv[1])
rows = []
for log in sorted(out.glob("*/train.log")):
    n, strategy = re.match(r"n(\d+)-(\w+)", log.parent.name).groups()
    n = int(n)
    text = log.read_text()
    psi = int(re.search(r"kiln: (\d+) parameters", text).group(1))
    m = re.search(r"memory per rank \(MiB\): rank 0: params ([\d.]+) grads ([\d.]+) optimizer ([\d.]+) peak RSS ([\d.]+)", text)
    p, g, o, rss = (float(x) for x in m.groups())
    mib = psi * 4 / 2**20
    want = {
        "ddp": (mib, mib, 2 * mib),
        "zero1": (mib + mib / n, mib, 2 * mib / n),
        "zero2": (mib + mib / n, mib / n, 2 * mib / n),
        "zero3": (mib / n, mib / n, 2 * mib / n),
    }[strategy]
    if n == 1:
        want = (mib, mib, 2 * mib)
    rows.append((n, strategy, psi, (p, g, o), want, rss))

print("| N | strategy | params MiB (formula) | grads MiB (formula) | optimizer MiB (formula) | total MiB | rank 0 peak RSS MiB | ZeRO paper, mixed-precision Adam, bytes/param |")
print("|---|---|---|---|---|---|---|---|")
paper = {"ddp": lambda n: 16, "zero1": lambda n: 4 + 12 / n, "zero2": lambda n: 2 + 14 / n, "zero3": lambda n: 16 / n}
for n, s, psi, got, want, rss in sorted(rows, key=lambda r: (r[0], r[1])):
    cells = " | ".join(f"{a:.1f} ({b:.1f})" for a, b in zip(got, want))
    print(f"| {n} | {s} | {cells} | {sum(got):.1f} | {rss:.0f} | {paper[s](n):.1f} |")
print()
print(f"Psi = {rows[0][2]:,} parameters (MobileLLM-125M shape, vocab 32000).")
