#!/usr/bin/env bash
# RWKV-7 rows of experiments/ssm-blocks/README.md.
#   experiments/ssm-blocks/run-rwkv.sh [PYTHON_WITH_TORCH]
# 1. throughput (results-rwkv.jsonl): kiln bench vs the RWKV-v7 reference maths
#    in PyTorch (torch_rwkv7_bench.py, per-timestep WKV loop) at the same shape,
#    alternating rounds;
# 2. tinyshakespeare: decoder, RWKV-7 and an RWKV + attention hybrid at ~0.8M
#    parameters, the same 2000 steps of the shakespeare-char recipe
#    (metrics-*.jsonl, train-*.log).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-/work/venv/bin/python}
ROUNDS=${ROUNDS:-2}
OUT=experiments/ssm-blocks
cargo build --release --bin kiln >&2
if [ -z "${SKIP_BENCH:-}" ]; then
  for round in $(seq 1 "$ROUNDS"); do
    echo "{\"round\": $round, \"seq\": 256, \"kiln\": $(./target/release/kiln bench $OUT/bench-rwkv7.toml --steps 5 --warmup 2)}"
    echo "{\"round\": $round, \"seq\": 256, \"torch\": $("$PY" $OUT/torch_rwkv7_bench.py --steps 3 --warmup 1 2>/dev/null)}"
  done > $OUT/results-rwkv.jsonl
fi
for cfg in shakespeare-char rwkv7-shakespeare hybrid-rwkv-shakespeare; do
  rm -rf "runs/ssm-$cfg"
  /usr/bin/time -v ./target/release/kiln train "configs/$cfg.toml" --run-dir "runs/ssm-$cfg" > "$OUT/train-$cfg.log" 2>&1
  cp "runs/ssm-$cfg/metrics.jsonl" "$OUT/metrics-$cfg.jsonl"
done
