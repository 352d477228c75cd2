#!/usr/bin/env bash
# Does llama.cpp run Kiln's GGUF files, and does Kiln's fake-quantised
# forward (`kiln eval --quantize`) compute what llama.cpp computes? For a
# Llama (GQA, tied) and a Mamba trained briefly on the built-in stories:
# `kiln quantize --format f32|f16|q8_0|q4_0`, then
# tests/reference/check_gguf_llamacpp.py (llama-cpp-python) against kiln's
# logits: float, and fake-quantised with llama.cpp's activation q8_0.
#   bash experiments/gguf-llamacpp/run.sh   (PY=/abs/path/python overrides)
# (target/llama-venv: python3 -m venv target/llama-venv &&
#  target/llama-venv/bin/pip install numpy gguf llama-cpp-python)
set -euo pipefail
cd "$(dirname "$0")"
KILN=$(realpath "${KILN:-../../target/release/kiln}")
PY=${PY:-$(pwd)/../../target/llama-venv/bin/python}
CHECK=$(realpath ../../tests/reference/check_gguf_llamacpp.py)
rm -rf runs && mkdir -p runs && cd runs
TEXT="Once upon a time, there was a little girl named Lily. She loved to play in the park with her dog."
for arch in llama mamba; do
  if [ $arch = llama ]; then
    MODEL='dim = 128
n_layers = 4
n_heads = 4
n_kv_heads = 2
ffn_dim = 352
max_seq_len = 128
tie_embeddings = true'
  else
    MODEL='arch = "mamba"
dim = 64
n_layers = 4
d_state = 8
max_seq_len = 128
tie_embeddings = true'
  fi
  printf '[model]\n%s\n\n[data]\nstories_docs = 3000\n\n[tokenizer]\nkind = "char"\n\n[optimizer]\nlr = 2e-3\n\n[training]\nmax_steps = 300\nbatch_size = 16\neval_every = 300\neval_batches = 4\n' "$MODEL" > $arch.toml
  $KILN train $arch.toml --run-dir $arch > /dev/null 2>&1
  $KILN eval $arch --text "$TEXT" --logits-out $arch-float.json > /dev/null
  for f in f32 f16 q8_0 q4_0; do
    $KILN quantize $arch --format $f --out $arch-$f.gguf > /dev/null
    case $f in
      f32|f16) ref=$arch-float.json ;;
      *) ref=$arch-fq-$f.json
         $KILN eval $arch --text "$TEXT" --logits-out $ref --quantize $f --activations q8_0 > /dev/null ;;
    esac
    for r in $ref $arch-float.json; do
      # (the checker exits 1 past --tol; the comparison is the point here)
      line=$($PY $CHECK --gguf $arch-$f.gguf --logits-json $r --tol 100 2>&1 | grep -E "^overall|next-token" | tr '\n' ' ' || true)
      echo "$arch $f vs $(basename $r .json): $line"
      if [ $r = $arch-float.json ]; then break; fi
    done
  done
done

# Greedy continuations: kiln generate (fake-quantised as the file) vs llama.cpp.
P="Once upon a time, there was a little"
for arch in llama mamba; do for f in f16 q8_0 q4_0; do
  if [ $f = f16 ]; then kq=""; else kq="--quantize $f --activations q8_0"; fi
  a=$($KILN generate $arch --prompt "$P" --temperature 0 --max-new-tokens 32 $kq 2>/dev/null)
  b=$($PY ../greedy_llamacpp.py $arch-$f.gguf "$P" 32 2>/dev/null)
  if [ "$a" = "$b" ]; then echo "greedy $arch $f: same 32 tokens: $a"; else echo "greedy $arch $f: DIFFERENT: kiln [$a] llama.cpp [$b]"; fi
done; done
