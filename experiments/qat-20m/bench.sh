#!/usr/bin/env bash
# What a QAT step costs over a plain one (issue 13: "QAT costs little over plain
# training"): `kiln bench` of the same step with and without q4_0 fake
# quantisation (weights only, and weights + q8_0 activations), at this
# experiment's 20M shape (batch 8 x 256) and at the quickstart shape
# (experiments/qat, batch 16 x 64), arms alternating within each round.
#   experiments/qat-20m/bench.sh > experiments/qat-20m/bench.jsonl
# Needs runs/fp (run.sh) since the 20M configs start from it.
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN=${KILN:-target/release/kiln}
ROUNDS=${ROUNDS:-3}
b() {  # round shape arm steps config [--set ...]
  local round=$1 shape=$2 arm=$3 steps=$4; shift 4
  local out
  out=$("$KILN" bench "$@" --steps "$steps" --warmup 1 --data run 2>/dev/null)
  echo "{\"round\": $round, \"shape\": \"$shape\", \"arm\": \"$arm\", \"load\": \"$(cut -d' ' -f1 /proc/loadavg)\", \"bench\": $out}"
}
for r in $(seq 1 "$ROUNDS"); do
  b "$r" 20m fp 4 experiments/qat-20m/ft.toml
  b "$r" 20m q4_0-weights 4 experiments/qat-20m/qat.toml --set quantize.activations=none
  b "$r" 20m q4_0+q8_0-act 4 experiments/qat-20m/qat.toml
  b "$r" quickstart fp 8 experiments/qat/fp.toml
  b "$r" quickstart q4_0-weights 8 experiments/qat/qat-q4_0.toml --set quantize.start_step=0 --set quantize.activations=none
  b "$r" quickstart q4_0+q8_0-act 8 experiments/qat/qat-q4_0.toml --set quantize.start_step=0
done
