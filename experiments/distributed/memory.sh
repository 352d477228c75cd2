#!/usr/bin/env bash
# Per-rank training-state bytes of the MobileLLM-125M shape (fp32 AdamW) for
# N = 1, 2, 4 ranks and each strategy, as rank 0's log reports them (bytes
# of the buffers each rank holds), next to the formulas (table.py).
#   cargo build --release --features kiln-trainer/mpi   (or the test build's binary)
#   experiments/distributed/memory.sh        # writes runs/memory/*.log, memory.md
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN="${KILN:-target/release/kiln}"
OUT=experiments/distributed/runs/memory
rm -rf "$OUT" && mkdir -p "$OUT"
SETS=(--set training.max_steps=1 --set training.device=\"cpu\" --set training.grad_accum=1 --set schedule.warmup_steps=0 --set training.batch_size=4 --set data.seq_len=32
      --set data.stories_docs=200 --set tokenizer.kind=\"char\" --set logging.sample_tokens=0
      --set training.eval_every=0 --set training.eval_batches=1 --set checkpoint.every=0)
for n in 1 2 4; do
    for s in ddp zero1 zero2 zero3; do
        if [ "$n" = 1 ] && [ "$s" != ddp ]; then continue; fi
        dir="$OUT/n$n-$s"
        "$KILN" launch -n "$n" --threads-per-rank 1 -- train configs/mobilellm-125m.toml \
            --run-dir "$dir" "${SETS[@]}" --set distributed.strategy=\"$s\" \
            > "$OUT/n$n-$s.log" 2>&1
        grep "memory per rank" "$dir/train.log" | sed "s/^/n$n $s: /"
        rm -rf "$dir/checkpoints"   # ~1.5 GB each; the table reads train.log
    done
done
python3 experiments/distributed/table.py "$OUT" > experiments/distributed/memory.md
cat experiments/distributed/memory.md
