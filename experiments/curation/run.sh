#!/usr/bin/env bash
# Does curation help? (issue 16, must-show 4.) A corpus of clean Shakespeare
# documents and as many seeded noise documents (make_corpus.py); the same model
# trained for the same tokens on each arm's kept data, scored on held-out clean
# text:
#   unfiltered | heuristics (Gopher) | classifier top 50% | perplexity band |
#   random (documents dropped at random to the classifier arm's retention)
# then DoReMi on three domains (two clean, one 92% noise): reference ->
# proxy -> the proportional mixture vs DoReMi's weights at equal tokens.
#   SHAKESPEARE=data/corpora/tinyshakespeare.txt experiments/curation/run.sh
#   python3 experiments/curation/tables.py > experiments/curation/results.md
#   $PY experiments/curation/plot.py     # curation.png (needs matplotlib)
# Prints one JSON line per measurement on stdout (kept in results.jsonl).
set -euo pipefail
cd "$(dirname "$0")"
KILN=${KILN:-$(pwd)/../../target/release/kiln}
SHAKESPEARE=${SHAKESPEARE:-../../data/corpora/tinyshakespeare.txt}
SEEDS=${SEEDS:-"1 2"}
W=work
mkdir -p $W/runs $W/data
log() { echo "$@" >&2; }

# 1. Corpus, tokenizer (char, over everything the runs read), classifier, proxy.
[ -f $W/web.jsonl ] || python3 make_corpus.py "$SHAKESPEARE" $W >&2
if [ ! -f $W/tokenizer.json ]; then
  cat > $W/tok.toml <<EOF
[[source]]
domain = "all"
paths = ["web.jsonl", "doremi/*.jsonl"]
[[source]]
domain = "val"
paths = ["clean_val.txt", "proxy_train.txt"]
EOF
  "$KILN" tokenizer train $W/tok.toml --kind char --vocab-size 0 --out $W/tokenizer.json >&2
fi
[ -f $W/quality.bin ] || "$KILN" classifier train --input $W/classifier_train.txt \
  --output $W/quality.bin --word-ngrams 2 --epoch 5 --seed 1 >&2
if [ ! -f $W/runs/ppl-proxy/done ]; then
  rm -rf $W/runs/ppl-proxy
  "$KILN" train model.toml --run-dir $W/runs/ppl-proxy --set data.datasets=[] \
    --set data.train=$W/proxy_train.txt --set tokenizer.path=$W/tokenizer.json >&2
  touch $W/runs/ppl-proxy/done
fi

# 2. The arms' kept documents.
for arm in heuristics classifier perplexity; do
  [ -f $W/curated/$arm/REPORT.md ] || "$KILN" curate $arm.toml >&2
done
if [ ! -f $W/curated/random/kept.jsonl ]; then
  mkdir -p $W/curated/random
  python3 - $W <<'EOF'
import glob, json, random, sys
w = sys.argv[1]
target = sum(len(json.loads(l)["text"]) for f in glob.glob(f"{w}/curated/classifier/kept/web/*.jsonl") for l in open(f))
docs = [json.loads(l) for l in open(f"{w}/web.jsonl")]
random.Random(5).shuffle(docs)
out, n = [], 0
for d in docs:
    if n >= target:
        break
    out.append(d); n += len(d["text"])
with open(f"{w}/curated/random/kept.jsonl", "w") as f:
    for d in out:
        f.write(json.dumps({"id": d["id"], "text": d["text"]}) + "\n")
EOF
fi
prepare() {  # name paths...
  local name=$1; shift
  [ -f $W/data/$name/dataset.json ] && return
  { echo "out = \"data/$name\""; echo "tokenizer = \"tokenizer.json\""
    echo "val_fraction = 0.01"; echo "shard_tokens = 1000000"
    echo "[[source]]"; echo "domain = \"web\""; printf 'paths = [%s]\n' "$*"; } > $W/$name.data.toml
  "$KILN" data prepare $W/$name.data.toml >&2
}
prepare unfiltered '"web.jsonl"'
for arm in heuristics classifier perplexity; do prepare $arm "\"curated/$arm/kept/web/*.jsonl\""; done
prepare random '"curated/random/kept.jsonl"'

# What each arm kept, by kind of document.
python3 - $W <<'EOF'
import glob, json, sys
w = sys.argv[1]
kind = {json.loads(l)["id"]: json.loads(l)["kind"] for l in open(f"{w}/web.jsonl")}
for arm, pat in [("unfiltered", "web.jsonl"), ("heuristics", "curated/heuristics/kept/web/*.jsonl"),
                 ("classifier", "curated/classifier/kept/web/*.jsonl"),
                 ("perplexity", "curated/perplexity/kept/web/*.jsonl"), ("random", "curated/random/kept.jsonl")]:
    counts = {}
    for f in glob.glob(f"{w}/{pat}"):
        for l in open(f):
            d = json.loads(l)
            c = counts.setdefault(kind[d["id"]], [0, 0])
            c[0] += 1; c[1] += len(d["text"])
    print(json.dumps({"kept": {"arm": arm, "by_kind": counts}}))
EOF

# 3. Every arm, every seed: the same steps and batch; clean held-out loss.
train() {  # name seed [--set ...]
  local name=$1 seed=$2; shift 2
  local dir=$W/runs/$name-s$seed
  if [ ! -f $dir/done ]; then
    rm -rf $dir
    "$KILN" train model.toml --run-dir $dir --set training.seed=$seed "$@" > $dir.log 2>&1
    touch $dir/done
  fi
  local out
  out=$("$KILN" eval $dir --data $W/clean_val.txt 2>/dev/null | tail -1)
  echo "{\"eval\": {\"arm\": \"$name\", \"seed\": $seed, \"result\": $out}}"
}
for seed in $SEEDS; do
  for arm in unfiltered heuristics classifier perplexity random; do
    log "arm $arm seed $seed"
    train $arm $seed --set "data.datasets=[\"$W/data/$arm\"]"
  done
done

# 4. DoReMi: reference on the proportional mixture, proxy against it, then the
# proportional mixture vs the proxy's averaged weights at equal tokens. Two setups,
# differing only in the "web" domain's file: "six" (web.jsonl, all six noise kinds)
# and "spam" (web_spam.jsonl, random characters and boilerplate). Runs of the "six"
# setup keep their first names (doremi-proxy, proportional, doremi).
doremi_setup() {  # setup web-file suffix
  local setup=$1 web=$2 sfx=$3
  local data=data/doremi$sfx
  if [ ! -f $W/$data/dataset.json ]; then
    cat > $W/doremi$sfx.data.toml <<EOF
out = "$data"
tokenizer = "tokenizer.json"
val_fraction = 0.01
shard_tokens = 1000000
[[source]]
domain = "plays_a"
paths = ["doremi/plays_a.jsonl"]
[[source]]
domain = "plays_b"
paths = ["doremi/plays_b.jsonl"]
[[source]]
domain = "web"
paths = ["doremi/$web"]
EOF
    "$KILN" data prepare $W/doremi$sfx.data.toml >&2
  fi
  local DATA="data.datasets=[\"$W/$data\"]" proxy=$W/runs/doremi-proxy$sfx
  train doremi-reference$sfx 1 --set "$DATA"
  if [ ! -f $proxy/done ]; then
    rm -rf $proxy
    printf '%s\n[doremi]\nreference = "%s"\n' "$(cat model.toml)" "$W/runs/doremi-reference$sfx-s1" > $W/proxy$sfx.toml
    "$KILN" train $W/proxy$sfx.toml --run-dir $proxy --set training.seed=1 --set "$DATA" > $proxy.log 2>&1
    touch $proxy/done
  fi
  python3 - $proxy $setup <<'EOF'
import json, sys, tomllib
mix = tomllib.load(open(f"{sys.argv[1]}/doremi.toml", "rb"))["data"]["mixture"]
print(json.dumps({"doremi_weights": mix, "setup": sys.argv[2]}))
EOF
  local weights
  weights=$(python3 -c "import tomllib;m=tomllib.load(open('$proxy/doremi.toml','rb'))['data']['mixture'];print(' '.join(f'--set data.mixture.{k}={v}' for k,v in m.items()))")
  for seed in $SEEDS; do
    train proportional$sfx $seed --set "$DATA"
    # shellcheck disable=SC2086
    train doremi$sfx $seed --set "$DATA" $weights
  done
}
doremi_setup six web.jsonl ""
doremi_setup spam web_spam.jsonl -spam

# Why the two setups differ: the "six" reference model's loss on each kind of
# the web domain's documents (the first 60 of each kind). DoReMi's excess
# cannot fall on a kind whose loss the proxy still has to learn like clean text.
mkdir -p $W/kinds
python3 - $W <<'EOF2'
import json, sys
w = sys.argv[1]
by = {}
for l in open(f"{w}/doremi/web.jsonl"):
    d = json.loads(l)
    by.setdefault(d["kind"], []).append(d["text"])
for k, v in by.items():
    open(f"{w}/kinds/{k}.txt", "w").write("\n\n".join(v[:60]))
EOF2
for f in $W/kinds/*.txt; do
  kind=$(basename "$f" .txt)
  out=$("$KILN" eval $W/runs/doremi-reference-s1 --data "$f" 2>/dev/null | tail -1)
  echo "{\"kind_loss\": {\"kind\": \"$kind\", \"result\": $out}}"
done
