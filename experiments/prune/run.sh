#!/usr/bin/env bash
# Pruning table (issue 14, must-show 4, unstructured part): magnitude vs Wanda
# at 50% and 2:4 on experiments/qat-20m's 20.5M fp model; whole-split val loss
# before, after pruning, and after a 40-step healing run (masks kept).
#   experiments/qat-20m/run.sh first (the model and the data), then
#   experiments/prune/run.sh > experiments/prune/results.jsonl
#   python3 experiments/prune/tables.py
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
ev dense $DENSE
for method in magnitude wanda; do
  for spec in "sparsity 0.5" "nm 2:4"; do
    set -- $spec
    name=$method-${2/:/of}
    if [ ! -d $R/$name/checkpoints ]; then
      /usr/bin/time -f "%e s %M KB" "$KILN" prune $DENSE --out $R/$name --method $method --$1 $2 \
        > $R/$name.prune.txt 2>&1
    fi
    echo "{\"prune\": {\"label\": \"$name\", \"report\": $(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()))' $R/$name.prune.txt)}}"
    ev $name $R/$name
    if [ ! -f $R/$name-healed/done ]; then
      rm -rf $R/$name-healed
      "$KILN" train $D/heal.toml --run-dir $R/$name-healed --set init.from=$R/$name > $R/$name-healed.out 2>&1
      touch $R/$name-healed/done
    fi
    ev $name-healed $R/$name-healed
  done
done
# The control for healing: the dense model trained the same 40 steps.
if [ ! -f $R/dense-healed/done ]; then
  rm -rf $R/dense-healed
  "$KILN" train $D/heal.toml --run-dir $R/dense-healed --set init.from=$DENSE > $R/dense-healed.out 2>&1
  touch $R/dense-healed/done
fi
ev dense-healed $R/dense-healed
