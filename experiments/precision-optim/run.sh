#!/usr/bin/env bash
# configs/shakespeare-char.toml in each precision mode (AdamW), and Sophia vs
# AdamW at the same step budget (fp32). One line of JSON per run.
#   experiments/precision-optim/run.sh > experiments/precision-optim/results.jsonl
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --bin kiln >&2
OUT=${OUT:-/tmp/kiln-precision-optim}
rm -rf "$OUT"
run() {
  local name=$1; shift
  ./target/release/kiln train configs/shakespeare-char.toml --run-dir "$OUT/$name" "$@" >&2
  python3 - "$OUT/$name" "$name" <<'PY'
import json, re, sys
d, name = sys.argv[1], sys.argv[2]
m = [json.loads(l) for l in open(f"{d}/metrics.jsonl")]
val = [x["value"] for x in m if x["tag"] == "val/loss"]
tps = [x["value"] for x in m if x["tag"] == "train/tokens_per_s"]
win = [x["value"] for x in m if x["tag"] == "train/sophia_win_rate"]
secs = float(re.search(r"done: step \d+ in ([0-9.]+) s", open(f"{d}/train.log").read()).group(1))
out = {"run": name, "final_val_loss": val[-1], "val_losses": val, "train_seconds": secs,
       "median_tokens_per_s": sorted(tps)[len(tps) // 2]}
if win:
    out["sophia_win_rate_last"] = win[-1]
print(json.dumps(out))
PY
}
run adamw-fp32
run adamw-bf16-mixed --set 'training.precision="bf16-mixed"'
run adamw-bf16-pure --set 'training.precision="bf16-pure"'
run adamw-fp16-mixed --set 'training.precision="fp16-mixed"'
run sophia-fp32 --set 'optimizer.kind="sophia"' --set optimizer.beta1=0.965 --set optimizer.beta2=0.99 \
  --set optimizer.rho=0.04 --set optimizer.hessian_every=10
# Sophia with rho raised until its win rate sits in the paper's healthy
# 0.1-0.5 band (768-token batches are ~600x smaller than the paper's).
run sophia-fp32-rho0.4 --set 'optimizer.kind="sophia"' --set optimizer.beta1=0.965 --set optimizer.beta2=0.99 \
  --set optimizer.rho=0.4 --set optimizer.hessian_every=10
# ... and with a 3x higher peak learning rate.
run sophia-fp32-rho0.4-lr3e-3 --set 'optimizer.kind="sophia"' --set optimizer.beta1=0.965 --set optimizer.beta2=0.99 \
  --set optimizer.rho=0.4 --set optimizer.hessian_every=10 --set optimizer.lr=3e-3 --set schedule.min_lr=3e-4
# ... and with a 3x lower one.
run sophia-fp32-rho0.4-lr3e-4 --set 'optimizer.kind="sophia"' --set optimizer.beta1=0.965 --set optimizer.beta2=0.99 \
  --set optimizer.rho=0.4 --set optimizer.hessian_every=10 --set optimizer.lr=3e-4 --set schedule.min_lr=3e-5
# ... and at the reference's default lr (1e-4).
run sophia-fp32-rho0.4-lr1e-4 --set 'optimizer.kind="sophia"' --set optimizer.beta1=0.965 --set optimizer.beta2=0.99 \
  --set optimizer.rho=0.4 --set optimizer.hessian_every=10 --set optimizer.lr=1e-4 --set schedule.min_lr=1e-5
