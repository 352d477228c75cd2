#!/usr/bin/env bash
# PTQ vs QAT at 20M parameters (issue 13, must-show 3): byte-level BPE on real
# text, q4_0 post-training quantisation vs N steps of q4_0 QAT (with and without
# distillation from the fp model) vs N steps of plain fp training, then GGUF
# file sizes and llama.cpp CPU decode speed.
#   SHAKESPEARE=path/to/tinyshakespeare.txt experiments/qat-20m/run.sh > experiments/qat-20m/results.jsonl
#   python3 experiments/qat-20m/tables.py    # the README tables
#   python3 experiments/qat-20m/plot.py      # qat-20m.png (needs matplotlib)
# SHAKESPEARE defaults to data/corpora/tinyshakespeare.txt (README, "Data for the
# Shakespeare configs"). KILN overrides the binary; LLAMA_PY the python that has
# llama_cpp (target/llama-venv, made by the test command). Runs go to runs/ (not in
# git); a finished arm is not retrained unless FORCE=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN=${KILN:-target/release/kiln}
LLAMA_PY=${LLAMA_PY:-target/llama-venv/bin/python}
SHAKESPEARE=${SHAKESPEARE:-data/corpora/tinyshakespeare.txt}
D=experiments/qat-20m
R=$D/runs
mkdir -p $R/data $R/gguf

# 1. Corpus: tinyshakespeare (200 documents) and 30,000 generated stories; a 4096-token BPE.
# A .txt file is one document: cut the play into 200-line documents so that
# 5% of them (whole documents) are held out for validation.
if [ ! -d $R/data/shakespeare ]; then
  mkdir -p $R/data/shakespeare
  split -d -a 3 -l 200 --additional-suffix=.txt "$SHAKESPEARE" $R/data/shakespeare/part-
fi
[ -f $R/data/stories.jsonl ] || "$KILN" data stories --docs 30000 --out $R/data/stories.jsonl >&2
cat > $R/data/data.toml <<SPEC
out = "prepared"
tokenizer = "tokenizer.json"
val_fraction = 0.05
[[source]]
domain = "shakespeare"
paths = ["shakespeare"]
[[source]]
domain = "stories"
paths = ["stories.jsonl"]
id_field = "id"
SPEC
[ -f $R/data/tokenizer.json ] || "$KILN" tokenizer train $R/data/data.toml --vocab-size 4096 --out $R/data/tokenizer.json >&2
"$KILN" data prepare $R/data/data.toml >&2

train() {  # arm config
  if [ "${FORCE:-0}" = 1 ] || [ ! -f $R/$1/done ]; then
    rm -rf $R/$1
    /usr/bin/time -v "$KILN" train $2 --run-dir $R/$1 > $R/$1.out 2> $R/$1.time
    touch $R/$1/done
  fi
  python3 $D/record_run.py "$1" $R/$1 $R/$1.time
}

# 2. fp pretraining (600 steps x 8 x 256 = 1,228,800 tokens), then N = 150 steps
#    (307,200 tokens) from its final checkpoint in each arm.
train fp $D/fp.toml
train fp-ft $D/ft.toml
train qat $D/qat.toml
train qat-distill $D/qat-distill.toml

# 3. Whole validation split of both domains, every arm as deployed.
ev() {  # label run [kiln eval flags...]
  local label=$1 run=$2; shift 2
  local out
  out=$("$KILN" eval $R/$run "$@" 2>/dev/null | tail -1)
  python3 -c 'import json,sys; d=json.loads(sys.argv[3]); d.update(label=sys.argv[1], run=sys.argv[2], flags=" ".join(sys.argv[4:])); print(json.dumps({"eval": d}))' "$label" "$run" "$out" "$@"
}
ev fp32 fp
ev ptq fp --quantize q4_0 --activations q8_0
ev fp32-ft fp-ft
ev ptq-ft fp-ft --quantize q4_0 --activations q8_0
ev qat qat
ev qat-distill qat-distill
ev qat-float qat --quantize none
ev qat-distill-float qat-distill --quantize none

# 4. GGUF files and llama.cpp: size, prompt and decode tokens/s (2 threads).
q() { [ -f $R/gguf/$3 ] || "$KILN" quantize $R/$1 --format $2 --out $R/gguf/$3 >&2; }
q fp f32 fp-f32.gguf
q fp f16 fp-f16.gguf
q fp q8_0 fp-q8_0.gguf
q fp q4_0 fp-q4_0-ptq.gguf
q fp-ft q4_0 fp-ft-q4_0-ptq.gguf
q qat q4_0 qat-q4_0.gguf
q qat-distill q4_0 qat-distill-q4_0.gguf
for f in fp-f32 fp-f16 fp-q8_0 fp-q4_0-ptq fp-ft-q4_0-ptq qat-q4_0 qat-distill-q4_0; do
  "$LLAMA_PY" $D/llamacpp_speed.py $R/gguf/$f.gguf
done
