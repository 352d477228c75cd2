#!/usr/bin/env bash
# fp32 vs post-training quantisation (PTQ) vs quantisation-aware training (QAT)
# on the quickstart Llama (~1M params, char-level built-in stories, seq 64),
# llama.cpp running the q4_0 GGUFs, and the cost of a QAT training step.
#   experiments/qat/run.sh > experiments/qat/results.jsonl
# Runs go to experiments/qat/runs/ (git-ignored); an arm whose final checkpoint
# already exists is not retrained (FORCE=1 retrains). KILN=/path/to/kiln picks the
# binary (default ./target/release/kiln); LLAMA_PY the python with llama-cpp-python.
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN=${KILN:-./target/release/kiln}
LLAMA_PY=${LLAMA_PY:-target/llama-venv/bin/python}
Q=experiments/qat
R=$Q/runs
S=1000
ROUNDS=${ROUNDS:-2}
mkdir -p "$R"

# 1. Training: same shape, data, seed, schedule and S = 1000 steps (1,024,000 tokens).
# Model d128 is fp.toml as written (~1M params); d64 is the same with --set
# model.dim=64, model.ffn_dim=192 (a narrower check, ~0.2M params; run dirs d64-*).
train() {  # model run-name config [--set ...]
  local model=$1 name=$2 cfg=$3; shift 3
  if [ -n "${FORCE:-}" ] || [ ! -d "$R/$name/checkpoints/step-0000$S" ]; then
    rm -rf "$R/$name"
    "$KILN" train "$cfg" --run-dir "$R/$name" "$@" > "$R/$name.train.log" 2>&1
  fi
  local secs
  secs=$(sed -n 's/^done: step [0-9]* in \([0-9.]*\) s.*/\1/p' "$R/$name/train.log" | tail -1)
  echo "{\"kind\": \"train\", \"model\": \"$model\", \"arm\": \"$name\", \"steps\": $S, \"train_seconds\": ${secs:-null}, \"params\": $(sed -n 's/^parameters: *\([0-9,]*\).*/\1/p' "$R/$name/train.log" | head -1 | tr -d ,)}"
  # val-loss curve (during QAT, evaluations after start_step are fake-quantised)
  python3 - "$R/$name/metrics.jsonl" "$name" "$model" <<'PY'
import json, sys
pts = [(m["step"], m["value"]) for m in map(json.loads, open(sys.argv[1])) if m["tag"] == "val/loss"]
print(json.dumps({"kind": "curve", "model": sys.argv[3], "arm": sys.argv[2], "tag": "val/loss", "points": pts}))
PY
}
NARROW=(--set model.dim=64 --set model.ffn_dim=192)
for arm in fp qat-q4_0 qat-int4; do
  train d128 "$arm" "$Q/$arm.toml"
done
for arm in fp qat-q4_0 qat-int4; do
  train d64 "d64-$arm" "$Q/$arm.toml" "${NARROW[@]}"
done

# 2. Validation loss / ppl (kiln eval: the whole val split, windows of 64).
ev() {  # model arm method format run-dir [kiln eval args...]
  local model=$1 arm=$2 method=$3 fmt=$4 run=$5; shift 5
  echo "{\"kind\": \"eval\", \"model\": \"$model\", \"arm\": \"$arm\", \"method\": \"$method\", \"format\": \"$fmt\", \"args\": \"$*\", \"eval\": $("$KILN" eval "$run" "$@" 2>/dev/null)}"
}
for model in d128 d64; do
  p=""; [ "$model" = d64 ] && p="d64-"
  ev $model fp fp32 fp32 "$R/${p}fp"
  ev $model fp ptq q4_0+q8_0act "$R/${p}fp" --quantize q4_0 --activations q8_0
  ev $model fp ptq q4_0 "$R/${p}fp" --quantize q4_0
  ev $model fp ptq int4-g32 "$R/${p}fp" --quantize int4 --group 32
  ev $model fp ptq int4-channel "$R/${p}fp" --quantize int4
  ev $model qat-q4_0 qat q4_0+q8_0act "$R/${p}qat-q4_0"
  ev $model qat-int4 qat int4-channel "$R/${p}qat-int4"
  ev $model qat-int4 qat-then-ptq int4-g32 "$R/${p}qat-int4" --quantize int4 --group 32
done

# 3. llama.cpp runs the GGUFs. A fixed 192-character story text, cut into 3 rows of
# 64 characters (the trained context; the checker needs equal rows); kiln's logits from the same (fake-)quantised
# model; check_gguf_llamacpp.py prints both next-token NLLs, KL and max |diff|.
TEXT="Once upon a time, there was a little girl named Lily. She had a red ball. One day, Lily went to the park with her mom. She saw a big dog. The dog barked and ran to her. Lily gave him the ball."
G=$R/gguf; mkdir -p "$G"
gg() {  # name run-dir gguf-format [kiln eval args...]
  local name=$1 run=$2 fmt=$3; shift 3
  "$KILN" quantize "$run" --format "$fmt" --out "$G/$name.gguf" > "$G/$name.quantize.log" 2>&1
  python3 "$Q/logits.py" "$KILN" "$run" "$TEXT" "$G/$name.logits.json" --row 64 -- "$@"
  set +e
  "$LLAMA_PY" tests/reference/check_gguf_llamacpp.py --gguf "$G/$name.gguf" \
    --logits-json "$G/$name.logits.json" --tol 5e-2 > "$G/$name.check.log" 2>&1
  local rc=$?
  set -e
  echo "{\"kind\": \"gguf\", \"name\": \"$name\", \"gguf_format\": \"$fmt\", \"kiln_args\": \"$*\", \"bytes\": $(stat -c %s "$G/$name.gguf"), \"check_rc\": $rc, \"check\": $(python3 "$Q/parse_check.py" < "$G/$name.check.log")}"
}
gg fp-f32 "$R/fp" f32
gg fp-q4_0-ptq "$R/fp" q4_0 --quantize q4_0 --activations q8_0
gg qat-q4_0 "$R/qat-q4_0" q4_0
# Diagnostics of the kiln vs llama.cpp gap on quantised files: the same GGUFs against
# kiln logits with weights-only fake quantisation, and against kiln's float logits;
# q8_0 (near-lossless weights) the same way; an f16 GGUF against kiln f32.
gg fp-q4_0-ptq-wonly "$R/fp" q4_0 --quantize q4_0
gg fp-q4_0-vs-float "$R/fp" q4_0
gg fp-q8_0-ptq "$R/fp" q8_0 --quantize q8_0 --activations q8_0
gg fp-q8_0-ptq-wonly "$R/fp" q8_0 --quantize q8_0
gg fp-q8_0-vs-float "$R/fp" q8_0
gg fp-f16 "$R/fp" f16

# 4. Cost of a QAT step. kiln bench (times the training step), QAT from step 0,
# alternating fp, qat-q4_0, qat-int4 within each round. (Kiln before df46b9c
# ignored [quantize] in bench when start_step = 0: its losses were bit-identical to
# the fp config's; the "losses" key shows which.) Cross-check on real training:
# short runs (kiln train, 200 steps, QAT from step 0, final eval only) in the same
# alternation, median of the tok/s kiln logs every 20 steps (steps 40..200).
for round in $(seq 1 "$ROUNDS"); do
  echo "{\"kind\": \"bench\", \"round\": $round, \"arm\": \"fp\", \"bench\": $("$KILN" bench "$Q/fp.toml" --steps 5 --warmup 2 --data run)}"
  echo "{\"kind\": \"bench\", \"round\": $round, \"arm\": \"qat-q4_0\", \"bench\": $("$KILN" bench "$Q/qat-q4_0.toml" --set quantize.start_step=0 --steps 5 --warmup 2 --data run)}"
  echo "{\"kind\": \"bench\", \"round\": $round, \"arm\": \"qat-int4\", \"bench\": $("$KILN" bench "$Q/qat-int4.toml" --set quantize.start_step=0 --steps 5 --warmup 2 --data run)}"
done
SHORT=(--set training.max_steps=200 --set schedule.warmup_steps=20 --set training.eval_every=100000
       --set training.log_every=20 --set checkpoint.every=100000)
for round in $(seq 1 "$ROUNDS"); do
  for arm in fp qat-q4_0 qat-int4; do
    extra=(); [ "$arm" != fp ] && extra=(--set quantize.start_step=0)
    d=$R/speed-$arm-$round
    rm -rf "$d"
    "$KILN" train "$Q/$arm.toml" --run-dir "$d" "${SHORT[@]}" "${extra[@]}" > "$d.log" 2>&1
    python3 - "$d/train.log" "$arm" "$round" <<'PY'
import json, re, statistics, sys
log = open(sys.argv[1]).read()
tps = [(int(s), float(t)) for s, t in re.findall(r"^step (\d+) loss .* tok/s (\d+)", log, re.M)]
tps = [t for s, t in tps if s >= 40]
q = re.search(r"^quantize: (.*)$", log, re.M)
done = re.search(r"^done: step \d+ in ([\d.]+) s", log, re.M)
print(json.dumps({"kind": "train_speed", "round": int(sys.argv[3]), "arm": sys.argv[2],
                  "median_tokens_per_s": statistics.median(tps), "tokens_per_s": tps,
                  "train_seconds": float(done[1]) if done else None,
                  "quantize": q[1] if q else None}))
PY
  done
done
