#!/usr/bin/env bash
# Memory of full fine-tuning vs LoRA r=8 (q, v) on the MobileLLM-125M shape.
#   experiments/lora/memory/run.sh > experiments/lora/memory/results.jsonl
# Needs /usr/bin/time (GNU time). KILN=path/to/kiln overrides the binary.
# 1. a 1-step base checkpoint (runs/base) of base-125m.toml;
# 2. ROUNDS alternating rounds of `kiln bench` (full, lora), each under
#    /usr/bin/time -v (peak RSS of the whole process);
# 3. one 3-step `kiln train` per arm from the base: its checkpoint's
#    optimizer.safetensors / model.safetensors sizes and trainable parameters.
set -euo pipefail
cd "$(dirname "$0")/../../.."
KILN=${KILN:-target/release/kiln}
ROUNDS=${ROUNDS:-2}
D=experiments/lora/memory
mkdir -p $D/runs
maxrss() { awk -F': ' '/Maximum resident set size/ {print $2}' "$1"; }
elapsed() { awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$1"; }

if [ ! -d $D/runs/base/checkpoints ]; then
  /usr/bin/time -v "$KILN" train $D/base-125m.toml --run-dir $D/runs/base \
    --set training.eval_batches=1 > $D/runs/base.log 2> $D/runs/base.time
fi

for round in $(seq 1 "$ROUNDS"); do
  for arm in full lora; do
    # bench JSON + the process's peak RSS from GNU time (run again under time)
    /usr/bin/time -v "$KILN" bench $D/$arm.toml --steps 3 --warmup 1 \
      > $D/runs/bench-$arm-$round.json 2> $D/runs/bench-$arm-$round.time
    echo "{\"round\": $round, \"arm\": \"$arm\", \"bench\": $(tail -1 $D/runs/bench-$arm-$round.json), \"time_max_rss_kb\": $(maxrss $D/runs/bench-$arm-$round.time), \"time_elapsed\": \"$(elapsed $D/runs/bench-$arm-$round.time)\"}"
  done
done

for arm in full lora; do
  rm -rf $D/runs/train-$arm
  /usr/bin/time -v "$KILN" train $D/$arm.toml --run-dir $D/runs/train-$arm \
    --set training.eval_batches=1 > $D/runs/train-$arm.log 2> $D/runs/train-$arm.time
  ck=$(ls -d $D/runs/train-$arm/checkpoints/step-* | tail -1)
  trainable=$(grep -o '([0-9]* trainable parameters)' $D/runs/train-$arm/plan.txt | tr -dc 0-9 || true)
  echo "{\"arm\": \"$arm\", \"train_steps\": 3, \"trainable_params\": ${trainable:-null}, \"optimizer_bytes\": $(stat -c %s $ck/optimizer.safetensors), \"model_bytes\": $(stat -c %s $ck/model.safetensors), \"time_max_rss_kb\": $(maxrss $D/runs/train-$arm.time), \"time_elapsed\": \"$(elapsed $D/runs/train-$arm.time)\"}"
done
