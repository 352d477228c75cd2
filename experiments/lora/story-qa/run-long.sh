#!/usr/bin/env bash
# Story QA, long arms: LoRA r=8 and full fine-tuning for STEPS steps (default
# 1500) from the same base and QA set as run.sh (which must have run first:
# it builds runs/qa and runs/base). Appends to results-long.jsonl:
#   experiments/lora/story-qa/run-long.sh >> experiments/lora/story-qa/results-long.jsonl
#   python3 experiments/lora/story-qa/plot.py   # -> story-qa.png (both sets)
# STEPS=1000 for a shorter version; ARMS="lora-r8" to run one arm. The cosine
# schedule's length follows training.max_steps; warmup stays at 30 steps.
set -euo pipefail
cd "$(dirname "$0")/../../.."
KILN=${KILN:-target/release/kiln}
D=experiments/lora/story-qa
R=$D/runs
STEPS=${STEPS:-1500}
EVAL_EVERY=${EVAL_EVERY:-250}
MAX_NEW=${MAX_NEW:-32}
ARMS=${ARMS:-"lora-r8 full"}
NICE=${NICE:-5}
[ -f $R/qa/eval.jsonl ] && [ -d $R/base/checkpoints ] || { echo "run run.sh first (needs runs/qa and runs/base)" >&2; exit 1; }

record() {  # arm run_dir time_file qa_json
  python3 - "$@" <<'PY'
import json, re, sys
arm, run, tfile, qfile = sys.argv[1:5]
t = open(tfile).read()
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
el = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", t).group(1)
secs = 0.0
for part in el.split(":"):
    secs = secs * 60 + float(part)
val, step = None, None
for line in open(run + "/metrics.jsonl"):
    m = json.loads(line)
    if m["tag"] == "val/loss":
        val, step = m["value"], m["step"]
plan = open(run + "/plan.txt").read()
tr = re.search(r"\((\d+) trainable parameters\)", plan)
total = int(re.search(r"parameters:\s+([\d,]+)", plan).group(1).replace(",", ""))
q = json.loads(open(qfile).read().strip().splitlines()[-1])
print(json.dumps({"arm": arm, "steps": step, "val_loss": val,
                  "exact_match": q["exact_match"], "correct": q["correct"], "examples": q["examples"],
                  "trainable_params": int(tr.group(1)) if tr else total,
                  "train_wall_s": secs, "train_max_rss_mb": rss / 1024, "qa_eval_s": q["seconds"],
                  "misses": q["misses"][:3]}))
PY
}

for arm in $ARMS; do
  name=$arm-$STEPS
  rm -rf $R/arm-$name
  uptime > $R/arm-$name.load   # load before; `uptime` again after training
  nice -n $NICE /usr/bin/time -v "$KILN" train $D/$arm.toml --run-dir $R/arm-$name \
    --set training.max_steps=$STEPS --set training.eval_every=$EVAL_EVERY \
    > $R/arm-$name.out 2> $R/arm-$name.time
  uptime >> $R/arm-$name.load
  nice -n $NICE "$KILN" eval $R/arm-$name --qa $R/qa/eval.jsonl --max-new-tokens $MAX_NEW \
    > $R/arm-$name.qa.json 2> $R/arm-$name.qa.err
  record $name $R/arm-$name $R/arm-$name.time $R/arm-$name.qa.json
done
