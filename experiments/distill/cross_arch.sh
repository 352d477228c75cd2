#!/usr/bin/env bash
# Cross-architecture distillation (issue 14, must-show 3): a 3.05M Mamba
# student (mamba-student.toml: 100 steps of 8 x 128) from scratch vs distilled
# from the 20.5M Llama teacher of experiments/qat-20m (forward KL, alpha 0.5,
# T = 1), equal steps and batches, SEEDS seeds (ARMS: which arms; two
# invocations with one arm each run side by side); then each arm's
# whole-split val loss.
#   KILN=target/release/kiln experiments/distill/cross_arch.sh > experiments/distill/cross_arch.jsonl
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN=${KILN:-target/release/kiln}
D=experiments/distill
R=$D/runs
SEEDS=${SEEDS:-"1337"}
TEACHER=experiments/qat-20m/runs/fp
[ -d $TEACHER/checkpoints ] || { echo "run experiments/qat-20m/run.sh first (the teacher)" >&2; exit 2; }
mkdir -p $R
arm() {  # name seed [--set ...]
  local name=$1 seed=$2; shift 2
  local dir=$R/$name-s$seed
  if [ "${FORCE:-0}" = 1 ] || [ ! -f $dir/done ]; then
    rm -rf $dir
    /usr/bin/time -v "$KILN" train $D/mamba-student.toml --run-dir $dir --set training.seed=$seed "$@" \
      > $dir.out 2> $dir.time
    touch $dir/done
  fi
  python3 experiments/qat-20m/record_run.py "$name-s$seed" $dir $dir.time
  local out
  out=$("$KILN" eval $dir 2>/dev/null | tail -1)
  echo "{\"eval\": {\"arm\": \"$name\", \"seed\": $seed, \"result\": $out}}"
}
for seed in $SEEDS; do
  for a in ${ARMS:-mamba-scratch mamba-forward-kl}; do
    case $a in
      mamba-scratch) arm mamba-scratch $seed ;;
      mamba-forward-kl) arm mamba-forward-kl $seed --set distill.teacher=$TEACHER --set distill.loss=forward-kl ;;
    esac
  done
done
