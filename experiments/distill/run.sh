#!/usr/bin/env bash
# Distillation beats scratch (issue 14, must-show 2, online arms): a 3.15M
# student trained from scratch vs distilled from the 20.5M teacher of
# experiments/qat-20m (forward KL, reverse KL, skew KL; alpha 0.5, T = 1), equal
# steps and batches, SEEDS seeds each; arm (d): forward KL from the offline
# teacher cache (`kiln distill cache`, built once over the windows the seeds'
# runs draw; CACHE_TARGETS sampled or top-k); then every arm's whole-split val
# loss.
#   experiments/qat-20m/run.sh first (the teacher and the data), then
#   experiments/distill/run.sh > experiments/distill/results.jsonl
#   python3 experiments/distill/tables.py; python3 experiments/distill/plot.py
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN=${KILN:-target/release/kiln}
D=experiments/distill
R=$D/runs
SEEDS=${SEEDS:-"1337 2024"}
TEACHER=experiments/qat-20m/runs/fp
[ -d $TEACHER/checkpoints ] || { echo "run experiments/qat-20m/run.sh first (the teacher)" >&2; exit 2; }
mkdir -p $R
arm() {  # name seed [--set ...]; ARMS (default: all) names the arms to run
  local name=$1 seed=$2; shift 2
  case " ${ARMS:-$name} " in *" $name "*) ;; *) return 0 ;; esac
  local dir=$R/$name-s$seed
  if [ "${FORCE:-0}" = 1 ] || [ ! -f $dir/done ]; then
    rm -rf $dir
    /usr/bin/time -v "$KILN" train $D/student.toml --run-dir $dir --set training.seed=$seed "$@" \
      > $dir.out 2> $dir.time
    touch $dir/done
  fi
  python3 experiments/qat-20m/record_run.py "$name-s$seed" $dir $dir.time
  local out
  out=$("$KILN" eval $dir 2>/dev/null | tail -1)
  echo "{\"eval\": {\"arm\": \"$name\", \"seed\": $seed, \"result\": $out}}"
}
for seed in $SEEDS; do
  arm scratch $seed
  arm forward-kl $seed --set distill.teacher=$TEACHER --set distill.loss=forward-kl
  arm reverse-kl $seed --set distill.teacher=$TEACHER --set distill.loss=reverse-kl
  arm skew-kl $seed --set distill.teacher=$TEACHER --set distill.loss=skew-kl
done
# Arm (d): the teacher runs once, over exactly the windows the seeds' runs
# draw (top-16 and 16 sampled ids per position), then the students read it.
CACHE=$R/cache
if [ ! -f $CACHE/cache.json ]; then
  configs=()
  for seed in $SEEDS; do
    sed "s/^seed = 1337/seed = $seed/" $D/student.toml > $R/student-s$seed.toml
    configs+=($R/student-s$seed.toml)
  done
  /usr/bin/time -v "$KILN" distill cache $TEACHER experiments/qat-20m/runs/data/prepared \
    --out $CACHE --top-k 16 --samples 16 --windows-of "${configs[@]}" > $CACHE.out 2> $CACHE.time
fi
python3 - $CACHE.out $CACHE.time <<'PY'
import json, re, sys
line = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
t = open(sys.argv[2]).read()
wall = 0.0
for part in re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", t).group(1).split(":"):
    wall = wall * 60 + float(part)
line["wall_s"] = wall
print(json.dumps({"cache": line}))
PY
for seed in $SEEDS; do
  arm cache-kl $seed --set distill.cache=$CACHE --set distill.loss=forward-kl
done
for seed in ${TOPK_SEEDS:-}; do
  arm cache-topk $seed --set distill.cache=$CACHE --set distill.cache_targets=top-k
done
out=$("$KILN" eval $TEACHER 2>/dev/null | tail -1)
echo "{\"eval\": {\"arm\": \"teacher\", \"seed\": 1337, \"result\": $out}}"
