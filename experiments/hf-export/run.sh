#!/usr/bin/env bash
# Trains tiny models of each decoder variant for a few steps, exports them
# with `kiln export --format hf`, and checks in `transformers` (CPU, fp32)
# that AutoModelForCausalLM loads them and gives kiln's logits.
#   experiments/hf-export/run.sh PYTHON_WITH_TRANSFORMERS
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-python3}
cargo build --release --bin kiln >&2
work=$(mktemp -d)
base=(--set model.dim=64 --set model.n_layers=3 --set model.n_heads=4 --set model.ffn_dim=96
      --set model.max_seq_len=64 --set data.stories_docs=500 --set training.max_steps=30
      --set schedule.warmup_steps=5 --set training.eval_every=0 --set logging.sample_tokens=0)
declare -A variants=(
  [tied-mha]="--set model.n_kv_heads=4"
  [gqa-untied]="--set model.n_kv_heads=2 --set model.tie_embeddings=false"
  [mobilellm-ls]="--set model.n_kv_heads=2 --set model.share_repeat=2"
  [mobillama-shared-ffn]="--set model.n_kv_heads=4 --set model.shared_ffn=true --set model.tie_embeddings=false"
)
for v in tied-mha gqa-untied mobilellm-ls mobillama-shared-ffn; do
  # shellcheck disable=SC2086
  ./target/release/kiln train configs/quickstart.toml "${base[@]}" ${variants[$v]} --run-dir "$work/$v" 2>/dev/null
  ./target/release/kiln export "$work/$v" --format hf --out "$work/$v-hf" >/dev/null
  ./target/release/kiln eval "$work/$v" --text "Once upon a time, a little fox found a red ball." --logits-out "$work/$v.json" >/dev/null
  echo "== $v"
  "$PY" tests/reference/check_hf_export.py --export-dir "$work/$v-hf" --logits-json "$work/$v.json"
done
rm -rf "$work"
