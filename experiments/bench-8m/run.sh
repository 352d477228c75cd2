#!/usr/bin/env bash
# kiln vs PyTorch train-step throughput on the 8M Llama shape, same machine,
# alternating rounds so both see the same conditions.
#   experiments/bench-8m/run.sh [PYTHON_WITH_TORCH] > experiments/bench-8m/results.jsonl
# KILN_BEFORE=/path/to/an/older/kiln adds that binary to every round
# (a before/after comparison of a change, in the same run).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-python3}
ROUNDS=${ROUNDS:-3}
cargo build --release --bin kiln >&2
for round in $(seq 1 "$ROUNDS"); do
  if [ -n "${KILN_BEFORE:-}" ]; then
    echo "{\"round\": $round, \"kiln_before\": $("$KILN_BEFORE" bench configs/bench-8m.toml --steps 20 --warmup 3)}"
  fi
  echo "{\"round\": $round, \"kiln\": $(./target/release/kiln bench configs/bench-8m.toml --steps 20 --warmup 3)}"
  echo "{\"round\": $round, \"torch\": $("$PY" experiments/bench-8m/torch_llama_bench.py --steps 20 --warmup 3)}"
done
