#!/usr/bin/env bash
# Story QA: base vs LoRA r=8 vs LoRA r=32 vs full fine-tuning, equal steps.
#   experiments/lora/story-qa/run.sh > experiments/lora/story-qa/results.jsonl
#   python3 experiments/lora/story-qa/plot.py   # -> story-qa.png
# Longer LoRA r=8 / full arms (1500 steps by default; reuse runs/base, runs/qa):
#   experiments/lora/story-qa/run-long.sh >> experiments/lora/story-qa/results-long.jsonl
# Needs /usr/bin/time (GNU time) and python3. KILN=path/to/kiln overrides the
# binary; run directories go to experiments/lora/story-qa/runs/ (not in git).
set -euo pipefail
cd "$(dirname "$0")/../../.."
KILN=${KILN:-target/release/kiln}
D=experiments/lora/story-qa
R=$D/runs
MAX_NEW=${MAX_NEW:-32}   # longest answer is 26 characters (char tokenizer)
mkdir -p $R

# 1. QA set: 3000 training stories x 2 questions, 300 disjoint eval stories
#    (seed 1234, the default); pretraining below uses stories_seed 99.
[ -f $R/qa/eval.jsonl ] || "$KILN" data stories-qa --train-stories 3000 --eval-stories 300 --out $R/qa >&2

# 2. Pretrained base: base.toml (1.1M parameters, 700 steps).
if [ ! -d $R/base/checkpoints ]; then
  /usr/bin/time -v "$KILN" train $D/base.toml --run-dir $R/base > $R/base.out 2> $R/base.time
fi

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
                  "trainable_params": 0 if arm == "base" else (int(tr.group(1)) if tr else total),
                  "train_wall_s": secs, "train_max_rss_mb": rss / 1024, "qa_eval_s": q["seconds"],
                  "misses": q["misses"][:3]}))
PY
}

# 3. Base (no fine-tuning): exact match of the base checkpoint; its val loss on
#    the QA eval set from a 1-step run at lr 1e-12 (weights unchanged).
rm -rf $R/arm-base
/usr/bin/time -v "$KILN" train $D/full.toml --run-dir $R/arm-base --set training.max_steps=1 \
  --set optimizer.lr=1e-12 --set schedule.min_lr=0 --set schedule.warmup_steps=0 \
  --set training.eval_every=1 > $R/arm-base.out 2> $R/arm-base.time
"$KILN" eval $R/base --qa $R/qa/eval.jsonl --max-new-tokens $MAX_NEW > $R/arm-base.qa.json 2> $R/arm-base.qa.err
record base $R/arm-base $R/arm-base.time $R/arm-base.qa.json

# 4. Fine-tuned arms, same data, steps (300) and batch (8).
for arm in lora-r8 lora-r32 full; do
  rm -rf $R/arm-$arm
  /usr/bin/time -v "$KILN" train $D/$arm.toml --run-dir $R/arm-$arm > $R/arm-$arm.out 2> $R/arm-$arm.time
  "$KILN" eval $R/arm-$arm --qa $R/qa/eval.jsonl --max-new-tokens $MAX_NEW > $R/arm-$arm.qa.json 2> $R/arm-$arm.qa.err
  record $arm $R/arm-$arm $R/arm-$arm.time $R/arm-$arm.qa.json
done

# 5. Reference: a story-blind guesser (most common training answer per question line).
python3 $D/prior_baseline.py $R/qa > $D/prior_baseline.json
