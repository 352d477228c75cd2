#!/usr/bin/env bash
# Issue 3, must-show 2: prepare >= 1 GB of the built-in generated stories into
# token shards; record peak memory (/usr/bin/time -v) and throughput (MB/s of
# text). The corpus is written to $WORK (not the repo): ~1.2 GB of JSONL.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${WORK:-/tmp/kiln-data-prepare}
DOCS=${DOCS:-3600000}
mkdir -p "$WORK"
cargo build --release --bin kiln
K=$PWD/target/release/kiln

[ -f "$WORK/stories.jsonl" ] || "$K" data stories --docs "$DOCS" --out "$WORK/stories.jsonl"
cat > "$WORK/data.toml" <<SPEC
out = "prepared"
tokenizer = "tokenizer.json"
val_fraction = 0.005
[[source]]
domain = "stories"
paths = ["stories.jsonl"]
id_field = "id"
SPEC
# A 4096-token byte-level BPE trained on the first 50 MB of text.
[ -f "$WORK/tokenizer.json" ] || /usr/bin/time -v "$K" tokenizer train "$WORK/data.toml" \
    --vocab-size 4096 --max-bytes 50000000 --out "$WORK/tokenizer.json" 2> "$WORK/tokenizer-time.txt"
/usr/bin/time -v "$K" data prepare "$WORK/data.toml" --force 2> "$WORK/prepare-time.txt" \
    | tee "$WORK/prepare-report.txt"
grep -E "Maximum resident|Elapsed \(wall|Percent of CPU" "$WORK/prepare-time.txt"
du -sb "$WORK/stories.jsonl" "$WORK/prepared"
# A re-run over the same inputs is a no-op.
/usr/bin/time -f "re-run: %e s, %M KB peak" "$K" data prepare "$WORK/data.toml" > "$WORK/rerun.txt"
head -1 "$WORK/rerun.txt"
