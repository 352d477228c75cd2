#!/usr/bin/env bash
# The healing runs again at lr 1e-4 (cosine to 1e-5), below the pretraining's
# final 1.5e-4, so the short run does not first move the model away.
#   experiments/prune/heal-low-lr.sh >> experiments/prune/results.jsonl   (after run.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN=${KILN:-target/release/kiln}
R=experiments/prune/runs
for name in dense magnitude-0.5 wanda-0.5 magnitude-2of4 wanda-2of4; do
  from=$R/$name
  [ "$name" = dense ] && from=experiments/qat-20m/runs/fp
  dir=$R/$name-healed-lr1e-4
  if [ ! -f $dir/done ]; then
    rm -rf $dir
    "$KILN" train experiments/prune/heal.toml --run-dir $dir --set init.from=$from \
      --set optimizer.lr=1e-4 --set schedule.min_lr=1e-5 > $dir.out 2>&1
    touch $dir/done
  fi
  out=$("$KILN" eval $dir 2>/dev/null | tail -1)
  echo "{\"eval\": {\"label\": \"$name-healed-lr1e-4\", \"result\": $out}}"
done
