#!/usr/bin/env bash
# Does peft load Kiln's LoRA exports? For a Llama (GQA, tied, all seven
# projections adapted, rsLoRA) and a Mamba (in_proj, x_proj): train a small
# base on the built-in stories, fine-tune LoRA adapters, export the base with
# `--format hf` and the adapters with `--format peft`, and compare kiln's
# logits with peft's (unmerged and merge_and_unload) through
# tests/reference/check_peft_export.py; plus kiln's merged vs unmerged logits.
#   PY=/path/to/python-with-torch-transformers-peft bash experiments/lora-peft-export/run.sh
set -euo pipefail
cd "$(dirname "$0")"
ROOT=../..
KILN=$(realpath "${KILN:-$ROOT/target/release/kiln}")
PY=${PY:-python3}
rm -rf runs && mkdir -p runs && cd runs
TEXT="Once upon a time, Tom and his dog went to the park."
maxdiff() { python3 -c "
import json,sys
a=json.load(open(sys.argv[1]))['logits']; b=json.load(open(sys.argv[2]))['logits']
fa=[x for r in a for t in r for x in t]; fb=[x for r in b for t in r for x in t]
print(max(abs(x-y) for x,y in zip(fa,fb)))" "$1" "$2"; }
for arch in llama mamba; do
  if [ $arch = llama ]; then
    MODEL='dim = 64
n_layers = 2
n_heads = 4
n_kv_heads = 2
ffn_dim = 160
max_seq_len = 64
tie_embeddings = true'
    ADAPTER='r = 8
alpha = 16
rslora = true
targets = ["q", "k", "v", "o", "gate", "up", "down"]'
  else
    MODEL='arch = "mamba"
dim = 64
n_layers = 2
d_state = 8
max_seq_len = 64
tie_embeddings = true'
    ADAPTER='r = 8
alpha = 16
targets = ["in_proj", "x_proj"]'
  fi
  printf '[model]\n%s\n\n[data]\nstories_docs = 2000\n\n[tokenizer]\nkind = "char"\n\n[optimizer]\nlr = 3e-3\n\n[training]\nmax_steps = 150\nbatch_size = 16\neval_every = 150\neval_batches = 4\n' "$MODEL" > $arch-base.toml
  printf '[model]\n%s\n\n[init]\nfrom = "%s-base"\n\n[data]\nstories_docs = 2000\nstories_seed = 77\n\n[adapter]\n%s\n\n[optimizer]\nlr = 3e-3\n\n[training]\nmax_steps = 100\nbatch_size = 16\neval_every = 100\neval_batches = 4\n' "$MODEL" $arch "$ADAPTER" > $arch-lora.toml
  $KILN train $arch-base.toml --run-dir $arch-base > /dev/null 2>&1
  $KILN train $arch-lora.toml --run-dir $arch-lora > /dev/null 2>&1
  $KILN export $arch-base --format hf --out $arch-hf > /dev/null
  $KILN export $arch-lora --format peft --out $arch-peft > /dev/null
  $KILN merge $arch-lora --out $arch-merged > /dev/null
  $KILN eval $arch-lora --text "$TEXT" --logits-out $arch-lora.json > /dev/null
  $KILN eval $arch-merged --text "$TEXT" --logits-out $arch-merged.json > /dev/null
  echo "== $arch: kiln merged vs unmerged max |diff| $(maxdiff $arch-lora.json $arch-merged.json)"
  $PY ../$ROOT/tests/reference/check_peft_export.py --base-dir $arch-hf --adapter-dir $arch-peft --logits-json $arch-lora.json
done
