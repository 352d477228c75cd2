#!/usr/bin/env bash
# Cost per step of the arms (issue 14, must-show 2: "(d) at a fraction of the
# cost per step"): `kiln bench --data run` of the student config as scratch,
# online forward KL (the teacher forward each step) and from the offline cache,
# interleaved over ROUNDS rounds so that the shared machine's load hits every
# arm alike. One JSON line per bench.
#   KILN=target/release/kiln experiments/distill/bench.sh > experiments/distill/bench.jsonl
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN=${KILN:-target/release/kiln}
D=experiments/distill
TEACHER=experiments/qat-20m/runs/fp
CACHE=$D/runs/cache
[ -f $CACHE/cache.json ] || { echo "run experiments/distill/run.sh first (the cache)" >&2; exit 2; }
for round in $(seq ${ROUNDS:-2}); do
  for arm in scratch forward-kl cache-kl; do
    case $arm in
      scratch) set -- ;;
      forward-kl) set -- --set distill.teacher=$TEACHER ;;
      cache-kl) set -- --set distill.cache=$CACHE ;;
    esac
    out=$("$KILN" bench $D/student.toml --data run --steps ${STEPS:-10} --warmup 2 "$@" 2>/dev/null | tail -1)
    echo "{\"bench\": {\"arm\": \"$arm\", \"round\": $round, \"result\": $out}}"
  done
done
