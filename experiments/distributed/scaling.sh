#!/usr/bin/env bash
# The 8M bench shape (configs/bench-8m.toml) on this machine's 2 cores:
# 1 rank x 2 threads vs 2 ranks x 1 thread (DDP and ZeRO-2), the same global
# batch, ROUNDS alternating rounds. Tokens/s and the communication share are
# rank 0's logged figures over steps 11-30 (the first 10 warm up).
#   cargo build --release --features kiln-trainer/mpi
#   experiments/distributed/scaling.sh [ROUNDS]    # writes runs/scaling/, scaling.md
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN="${KILN:-target/release/kiln}"
ROUNDS="${1:-2}"
OUT=experiments/distributed/runs/scaling
rm -rf "$OUT" && mkdir -p "$OUT"
SETS=(--set training.max_steps=30 --set training.log_every=10 --set training.eval_every=0
      --set training.eval_batches=1 --set logging.sample_tokens=0 --set checkpoint.every=0
      --set data.stories_docs=3000)
for r in $(seq "$ROUNDS"); do
    RAYON_NUM_THREADS=2 "$KILN" train configs/bench-8m.toml --run-dir "$OUT/one-$r" "${SETS[@]}" \
        > "$OUT/one-$r.log" 2>&1
    for s in ddp zero2; do
        "$KILN" launch -n 2 --threads-per-rank 1 -- train configs/bench-8m.toml \
            --run-dir "$OUT/two-$s-$r" "${SETS[@]}" --set distributed.strategy=\"$s\" \
            > "$OUT/two-$s-$r.log" 2>&1
    done
done
python3 - "$OUT" <<'PY' | tee experiments/distributed/scaling.md
import re, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| run | round | tokens/s (steps 11-20, 21-30) | communication share of the step |")
print("|---|---|---|---|")
for log in sorted(out.glob("*/train.log")):
    name, r = log.parent.name.rsplit("-", 1)
    lines = [l for l in log.read_text().splitlines() if re.match(r"step (20|30) ", l)]
    tps = [re.search(r"tok/s (\d+)", l).group(1) for l in lines]
    comm = [m.group(1) + "%" for l in lines if (m := re.search(r"\((\d+)% of the step\)", l))]
    label = {"one": "1 rank x 2 threads", "two-ddp": "2 ranks x 1 thread, ddp", "two-zero2": "2 ranks x 1 thread, zero2"}[name]
    print(f"| {label} | {r} | {', '.join(tps)} | {', '.join(comm) or '-'} |")
PY
