#!/usr/bin/env bash
# Classifier throughput on one core (issue 16, must-show 5 for this stage):
# `kiln classifier train|predict` and pip fastText (thread=1) on the same
# seeded clean-vs-word-salad corpus. Usage (from the repository root):
#   cargo build --release --features kiln-trainer/wgpu -p kiln-trainer
#   experiments/classifier-throughput/run.sh
# Needs target/fasttext-venv (tests/reference/README.md) for the pip column.
set -euo pipefail
KILN=${KILN:-target/release/kiln}
PY=${PY:-target/fasttext-venv/bin/python}
WORK=${WORK:-/tmp/kiln-classifier-throughput}
CORPUS=${CORPUS:-../shared/data/tinyshakespeare.txt}
N_TRAIN=${N_TRAIN:-20000}
N_TEST=${N_TEST:-100000}
DIM=64 NGRAMS=2 BUCKET=200000 EPOCH=5 LR=0.5
here=$(dirname "$0")

python3 "$here/make_corpus.py" "$CORPUS" "$WORK" "$N_TRAIN" "$N_TEST"
echo "corpus: $(wc -c < "$WORK/train.txt") bytes train, $(wc -c < "$WORK/test.txt") bytes test; load: $(cut -d' ' -f1-3 /proc/loadavg)"

t0=$(date +%s.%N)
"$KILN" classifier train --input "$WORK/train.txt" --output "$WORK/kiln.bin" \
  --dim $DIM --word-ngrams $NGRAMS --bucket $BUCKET --epoch $EPOCH --lr $LR --seed 1
t1=$(date +%s.%N)
"$KILN" classifier predict --model "$WORK/kiln.bin" --input "$WORK/test.txt" > "$WORK/pred.txt"
t2=$(date +%s.%N)
# Model load alone, to separate it from prediction.
head -1 "$WORK/test.txt" | "$KILN" classifier predict --model "$WORK/kiln.bin" > /dev/null
t3=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v n="$N_TRAIN" -v m="$N_TEST" -v e=$EPOCH 'BEGIN {
  printf "kiln train: %d docs x %d epochs in %.2fs = %.0f doc-epochs/s (incl. dictionary, init, save)\n", n, e, b - a, n * e / (b - a);
  printf "kiln predict: %d docs in %.2fs = %.0f docs/s (%.2fs of it loading the model)\n", m, c - b, m / (c - b - (d - c)) , d - c }'
if [ -x "$PY" ]; then
  "$PY" "$here/pip_fasttext.py" "$WORK" $DIM $NGRAMS $BUCKET $EPOCH $LR
fi
