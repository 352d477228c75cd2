#!/usr/bin/env bash
# Minitron-style structured pruning (issue 14, must-show 4, structured part):
# the 20.5M fp model of experiments/qat-20m cut to about half by width (3 of 6
# heads, 1 of 2 kv heads, 512 of 1024 SwiGLU channels: 11.0M) or by depth (6
# of 12 blocks: 11.0M), each healed by distillation from the unpruned model
# (minitron.toml: 40 steps of 8 x 256, forward KL, alpha 1) vs the same small
# shape trained from scratch on the same batches; whole-split val loss.
#   KILN=target/release/kiln experiments/prune/minitron.sh > experiments/prune/minitron.jsonl
# (AXES, ARMS and EVAL=0 split the work over parallel invocations; a last
# plain invocation skips the trained arms and evaluates them all.)
#   python3 experiments/prune/minitron_tables.py   # table and minitron.png
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN=${KILN:-target/release/kiln}
D=experiments/prune
R=$D/runs
DENSE=experiments/qat-20m/runs/fp
[ -d $DENSE/checkpoints ] || { echo "run experiments/qat-20m/run.sh first" >&2; exit 2; }
mkdir -p $R
ev() {  # label run_dir
  local out
  out=$("$KILN" eval $2 2>/dev/null | tail -1)
  echo "{\"eval\": {\"label\": \"$1\", \"result\": $out}}"
}
train() {  # run_dir [--set ...]; ARMS (default: all) names the arms to train
  local dir=$1; shift
  case " ${ARMS:-$(basename $dir)} " in *" $(basename $dir) "*) ;; *) return 0 ;; esac
  if [ ! -f $dir/done ]; then
    rm -rf $dir
    /usr/bin/time -v "$KILN" train $D/minitron.toml --run-dir $dir "$@" > $dir.out 2> $dir.time
    touch $dir/done
  fi
  python3 experiments/qat-20m/record_run.py "$(basename $dir)" $dir $dir.time
}
[ "${EVAL:-1}" = 1 ] && ev dense $DENSE
for axis in ${AXES:-width depth}; do
  case $axis in
    width) flags="--heads 3 --kv-heads 1 --ffn-dim 512"
           shape="--set model.n_heads=3 --set model.n_kv_heads=1 --set model.head_dim=64 --set model.ffn_dim=512" ;;
    depth) flags="--layers 6"; shape="--set model.n_layers=6" ;;
  esac
  name=minitron-$axis
  if [ ! -d $R/$name/checkpoints ]; then
    "$KILN" prune $DENSE --out $R/$name --structured $flags > $R/$name.prune.txt 2>&1
  fi
  [ "${EVAL:-1}" = 1 ] && ev $name $R/$name
  train $R/$name-healed $shape --set init.from=$R/$name \
    --set distill.teacher=$DENSE --set distill.alpha=1.0
  [ "${EVAL:-1}" = 1 ] && ev $name-healed $R/$name-healed
  train $R/$name-scratch $shape --set optimizer.lr=1.5e-3 --set schedule.min_lr=1.5e-4
  [ "${EVAL:-1}" = 1 ] && ev $name-scratch $R/$name-scratch
done
