#!/usr/bin/env bash
# Mamba / hybrid vs the decoder (experiments/ssm-blocks/README.md).
#   experiments/ssm-blocks/run.sh [PYTHON_WITH_TORCH_TRANSFORMERS_MAMBAPY]
# 1. throughput (results.jsonl): kiln bench vs transformers' MambaForCausalLM of
#    the same shape, alternating rounds: with mambapy's parallel scan at seq 256,
#    and the slow path's per-timestep loop at seq 64 (at 256 one step takes minutes);
# 2. tinyshakespeare: decoder, Mamba and hybrid at ~0.8M parameters, the same
#    2000 steps of the shakespeare-char recipe (metrics-*.jsonl, train-*.log).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-/work/venv/bin/python}
ROUNDS=${ROUNDS:-2}
OUT=experiments/ssm-blocks
cargo build --release --bin kiln >&2
if [ -z "${SKIP_BENCH:-}" ]; then
  for round in $(seq 1 "$ROUNDS"); do
    echo "{\"round\": $round, \"seq\": 256, \"kiln\": $(./target/release/kiln bench $OUT/bench-mamba.toml --steps 5 --warmup 2)}"
    echo "{\"round\": $round, \"seq\": 256, \"torch\": $("$PY" $OUT/torch_ssm_bench.py --arch mamba --scan pscan --steps 3 --warmup 1 2>/dev/null)}"
    echo "{\"round\": $round, \"seq\": 64, \"kiln\": $(./target/release/kiln bench $OUT/bench-mamba.toml --set model.max_seq_len=64 --steps 5 --warmup 2)}"
    echo "{\"round\": $round, \"seq\": 64, \"torch\": $("$PY" $OUT/torch_ssm_bench.py --arch mamba --scan loop --seq 64 --steps 2 --warmup 1 2>/dev/null)}"
  done > $OUT/results.jsonl
fi
for cfg in shakespeare-char mamba-shakespeare hybrid-shakespeare; do
  rm -rf "runs/ssm-$cfg"
  /usr/bin/time -v ./target/release/kiln train "configs/$cfg.toml" --run-dir "runs/ssm-$cfg" > "$OUT/train-$cfg.log" 2>&1
  cp "runs/ssm-$cfg/metrics.jsonl" "$OUT/metrics-$cfg.jsonl"
done
