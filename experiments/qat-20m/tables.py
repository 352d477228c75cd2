#!/usr/bin/env python3
"""The README's tables (markdown) from results.jsonl and bench.jsonl.
    python3 experiments/qat-20m/tables.py"""
import json
import os
import statistics

here = os.path.dirname(os.path.abspath(__file__))


def lines(name):
    path = os.path.join(here, name)
    if not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path) if l.strip()]


rows = lines("results.jsonl")
E = {r["eval"]["label"]: r["eval"] for r in rows if "eval" in r}
T = {r["train"]["arm"]: r["train"] for r in rows if "train" in r}
G = [r["gguf"] for r in rows if "gguf" in r]

HOW = {
    "fp32": ("fp (600 steps)", "float"),
    "ptq": ("fp (600 steps)", "q4_0 PTQ"),
    "fp32-ft": ("fp-ft (+150 fp steps)", "float"),
    "ptq-ft": ("fp-ft (+150 fp steps)", "q4_0 PTQ"),
    "qat": ("qat (+150 q4_0 QAT steps)", "q4_0 (its QAT format)"),
    "qat-distill": ("qat-distill (+150 QAT steps, KD from fp)", "q4_0 (its QAT format)"),
    "qat-float": ("qat", "float (fake quant off)"),
    "qat-distill-float": ("qat-distill", "float (fake quant off)"),
}

print("### Validation loss, whole val split of both domains\n")
print("| run | evaluated as | val loss (all) | ppl | shakespeare loss | stories loss | vs fp-ft float | `kiln eval` |")
print("|---|---|---|---|---|---|---|---|")
base = E.get("fp32-ft")
for label, (run, how) in HOW.items():
    e = E.get(label)
    if not e:
        continue
    d = e.get("domains", {})
    delta = "" if not base or label == "fp32-ft" else f"{e['loss'] - base['loss']:+.4f}"
    cmd = f"kiln eval runs/{e['run']} {e['flags']}".strip()
    print(f"| {run} | {how} | {e['loss']:.4f} | {e['ppl']:.2f} | {d.get('shakespeare', {}).get('loss', float('nan')):.4f} | "
          f"{d.get('stories', {}).get('loss', float('nan')):.4f} | {delta} | `{cmd}` |")

if all(k in E for k in ("fp32-ft", "ptq-ft", "qat")):
    print("\n### Share of the q4_0 PTQ gap that QAT recovers (equal steps: fp-ft and qat saw the same 150 batches)\n")
    print("| domain | fp-ft float | fp-ft q4_0 PTQ | qat q4_0 | PTQ gap (nats) | QAT - float (nats) | recovered | qat-distill: q4_0 - its float |")
    print("|---|---|---|---|---|---|---|---|")
    for dom in ("all", "shakespeare", "stories"):
        def L(label):
            e = E[label]
            return e["loss"] if dom == "all" else e["domains"][dom]["loss"]
        f, p, q = L("fp32-ft"), L("ptq-ft"), L("qat")
        gap = p - f
        kd = L("qat-distill") - L("qat-distill-float") if "qat-distill-float" in E else float("nan")
        print(f"| {dom} | {f:.5f} | {p:.5f} | {q:.5f} | {gap:+.5f} | {q - f:+.5f} | {100 * (p - q) / gap:.0f}% | {kd:+.5f} |")

if T:
    print("\n### Training runs (loaded 2-core CPU; tokens/s are not a speed measurement)\n")
    print("| run | steps | wall s | median tokens/s | peak RSS MB | last train-time val loss (8 batches/domain) |")
    print("|---|---|---|---|---|---|")
    for arm, t in T.items():
        print(f"| {arm} | {t['steps']} | {t['wall_s']:.0f} | {t['median_tokens_per_s']:.0f} | {t['max_rss_mb']:.0f} | {t['val_loss']:.4f} |")

if G:
    print("\n### GGUF files in llama.cpp (llama-cpp-python, CPU, 2 threads, best of 3)\n")
    print("| file | bytes | MiB | prompt tokens/s (128) | decode tokens/s (128) |")
    print("|---|---|---|---|---|")
    for g in G:
        print(f"| {g['file']} | {g['bytes']:,} | {g['bytes'] / 2**20:.1f} | {g['prompt_tokens_per_s']:.0f} | {g['decode_tokens_per_s']:.0f} |")

B = [r for r in lines("bench.jsonl")]
if B:
    print("\n### QAT step cost (`kiln bench --data run`, arms alternating within each round)\n")
    print("| shape | arm | rounds | tokens/s (median) | fwd s | bwd s | slowdown vs fp (median of per-round ratios) |")
    print("|---|---|---|---|---|---|---|")
    for shape in ("20m", "quickstart"):
        fp = {r["round"]: r["bench"]["tokens_per_s"] for r in B if r["shape"] == shape and r["arm"] == "fp"}
        for arm in ("fp", "q4_0-weights", "q4_0+q8_0-act"):
            rs = [r for r in B if r["shape"] == shape and r["arm"] == arm]
            if not rs:
                continue
            tps = statistics.median(r["bench"]["tokens_per_s"] for r in rs)
            fw = statistics.median(r["bench"]["forward_s"] for r in rs)
            bw = statistics.median(r["bench"]["backward_s"] for r in rs)
            ratio = statistics.median(fp[r["round"]] / r["bench"]["tokens_per_s"] for r in rs if r["round"] in fp)
            print(f"| {shape} | {arm} | {len(rs)} | {tps:.0f} | {fw:.3f} | {bw:.3f} | {ratio:.2f}x |")
