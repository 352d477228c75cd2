#!/usr/bin/env bash
# Mamba / hybrid vs the decoder (experiments/ssm-blocks/README.md).
#   experiments/ssm-blocks/run.sh [PYTHON_WITH_TORCH]
# 1. throughput: kiln bench vs the PyTorch script of the same shape, alternating
#    rounds (results.jsonl);
# 2. tinyshakespeare: decoder, Mamba and hybrid at ~0.8M parameters, the same
#    2000 steps of the shakespeare-char recipe (runs/ssm-*/metrics.jsonl).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-/work/venv/bin/python}
ROUNDS=${ROUNDS:-2}
cargo build --release --bin kiln >&2
for round in $(seq 1 "$ROUNDS"); do
  echo "{\"round\": $round, \"arch\": \"mamba\", \"kiln\": $(./target/release/kiln bench experiments/ssm-blocks/bench-mamba.toml --steps 5 --warmup 2)}"
  echo "{\"round\": $round, \"arch\": \"mamba\", \"torch\": $("$PY" experiments/ssm-blocks/torch_ssm_bench.py --arch mamba --steps 3 --warmup 1 2>/dev/null)}"
done > experiments/ssm-blocks/results.jsonl
for cfg in shakespeare-char mamba-shakespeare hybrid-shakespeare; do
  ./target/release/kiln train "configs/$cfg.toml" --run-dir "runs/ssm-$cfg" 2>&1 | tail -3
  cp "runs/ssm-$cfg/metrics.jsonl" "experiments/ssm-blocks/metrics-$cfg.jsonl"
done
