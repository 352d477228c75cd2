#!/usr/bin/env bash
# Scoring throughput per core of each `kiln curate` stage, side by side with
# datatrove 0.10.1's equivalent on the same corpus, alternating rounds.
# Usage: experiments/curation-throughput/run.sh [ROUNDS]   (default 3)
# Needs target/release/kiln (cargo build --release) and, for the datatrove
# column, a Python with datatrove==0.10.1, spacy and xxhash ($PY, default
# target/minhash-venv, the venv of the MinHash parity reference). Work files go to $WORK (default /tmp/kiln-curation-throughput).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KILN=$ROOT/target/release/kiln
PY=${PY:-$ROOT/target/minhash-venv/bin/python}
WORK=${WORK:-/tmp/kiln-curation-throughput}
ROUNDS=${1:-3}
mkdir -p "$WORK"
cd "$WORK"

# The corpus: the 3,002 documents of the filter parity fixture (real and
# corrupted English, 35-100,001 words), as {"id", "text"} JSONL.
python3 - "$ROOT/tests/fixtures/curation/filters.jsonl.gz" <<'PY'
import gzip, json, sys
with open("corpus.jsonl", "w", encoding="utf-8") as out:
    for i, line in enumerate(gzip.open(sys.argv[1], "rt", encoding="utf-8")):
        out.write(json.dumps({"id": f"d{i}", "text": json.loads(line)["case"]["text"]}) + "\n")
PY
DOCS=$(wc -l < corpus.jsonl)
echo "zorp" > bad_words.txt

STAGES="gopher_quality gopher_repetition c4 fineweb language bad_words exact_dedup minhash"
: > results.tsv
for round in $(seq "$ROUNDS"); do
  for stage in $STAGES; do
    extra=""
    [ "$stage" = bad_words ] && extra='path = "bad_words.txt"'
    cat > "recipe-$stage.toml" <<TOML
out = "out-$stage"
[[source]]
domain = "web"
paths = ["corpus.jsonl"]
id_field = "id"
[[stage]]
kind = "$stage"
$extra
TOML
    rm -rf "out-$stage"
    # One core: one rayon thread pinned to CPU 0. kiln prints the stage's
    # scoring rate (its own timer over the scoring calls only).
    start=$(date +%s.%N)
    line=$(RAYON_NUM_THREADS=1 taskset -c 0 "$KILN" curate "recipe-$stage.toml" | grep -E "^  $stage ")
    wall=$(echo "$(date +%s.%N) - $start" | bc)
    rate=$(echo "$line" | sed -E 's/.* ([0-9]+) docs\/s per core.*/\1/')
    printf "%s\tkiln\t%s\t%s\t%s\n" "$round" "$stage" "$rate" "$wall" >> results.tsv
    case $stage in
      gopher_quality|gopher_repetition|c4|fineweb|minhash)
        if [ -x "$PY" ]; then
          read -r _ n secs < <(taskset -c 0 "$PY" "$ROOT/experiments/curation-throughput/datatrove_stage.py" corpus.jsonl "$stage")
          printf "%s\tdatatrove\t%s\t%.0f\t\n" "$round" "$stage" "$(echo "$n / $secs" | bc -l)" >> results.tsv
        fi ;;
    esac
  done
done

# Median over rounds per (tool, stage).
python3 - "$DOCS" <<'PY'
import collections, statistics, sys
rates, walls = collections.defaultdict(list), collections.defaultdict(list)
for line in open("results.tsv"):
    r, tool, stage, rate, wall = line.rstrip("\n").split("\t")
    rates[(tool, stage)].append(float(rate))
    if wall:
        walls[stage].append(float(wall))
print(f"corpus: {sys.argv[1]} documents; one core; median of {len(next(iter(rates.values())))} rounds\n")
print("| stage | kiln docs/s/core (scoring) | kiln end-to-end docs/s (1 thread, whole command) | datatrove docs/s/core | kiln / datatrove |")
print("|---|---:|---:|---:|---:|")
for stage in dict.fromkeys(s for _, s in rates):
    k = statistics.median(rates[("kiln", stage)])
    e = int(sys.argv[1]) / statistics.median(walls[stage])
    d = rates.get(("datatrove", stage))
    dt = f"{statistics.median(d):,.0f}" if d else "n/a"
    ratio = f"{k / statistics.median(d):.1f}x" if d else ""
    print(f"| {stage} | {k:,.0f} | {e:,.0f} | {dt} | {ratio} |")
PY
