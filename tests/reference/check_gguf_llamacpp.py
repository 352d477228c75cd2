#!/usr/bin/env python3
"""Check a Kiln GGUF export against kiln's own logits by running it in llama.cpp.

Manual check for the lead (not run in CI). Its own venv (builds llama.cpp from source
with cmake; CPU only; a few minutes on 2 cores):

    python3 -m venv target/llama-venv
    target/llama-venv/bin/pip install numpy gguf llama-cpp-python

    target/llama-venv/bin/python tests/reference/check_gguf_llamacpp.py \\
        --gguf MODEL.gguf --logits-json FILE [--tol 1e-2] [--threads 2] [--no-run]

1. Prints the GGUF header through ``gguf.GGUFReader``: version, every metadata key
   with its type and value (arrays abbreviated: length and first items), then every
   tensor: name, ggml type (F32, F16, Q8_0, Q4_0, ...), shape in ggml order (ne0
   first, i.e. [in, out] for a Linear stored [out, in] row-major), element count.
2. Unless --no-run: loads the file with
   ``llama_cpp.Llama(model_path=..., n_ctx=len(tokens) + 8, n_batch=n_ctx,
   logits_all=True, verbose=False, n_threads=2, type_k=F32, type_v=F32)`` (F32 KV
   cache unless --kv-type f16; llama.cpp pads n_ctx up to 256 itself) and, for every row of tokens,
   ``reset()`` + ``eval(row)``, reading the logits of ALL positions from
   ``llm.scores[:n_tokens]`` ([T, V], float32).

FILE is JSON written by kiln, the same format as check_hf_export.py:

    {"tokens": [[int, ...], ...], "logits": [[[float, ...], ...], ...]}

tokens [B][T], logits [B][T][V] (kiln's logits for the same model, normally computed
from the SAME quantised weights, dequantised). Extra keys are ignored. No BOS is
added: the rows are evaluated exactly as given.

Printed per row and overall: max / mean abs logit diff (with the position of the
max), argmax agreement, and "perplexity-like" stats: the mean next-token NLL of
tokens[t + 1] under each model's softmax(logits[t]) and exp of it (ppl), plus the
mean KL(kiln || llama.cpp) over positions.

Exact equality is NOT expected even for a perfect export: on CPU, llama.cpp's
matmul with quantised (q4_0 / q8_0) weights first quantises the ACTIVATIONS to q8_0
blocks (ggml vec_dot_type of Q4_0 and Q8_0 is Q8_0; the x86 path
quantize_row_q8_0 uses id = 127 / amax and round-half-to-even
(_mm256_round_ps), unlike the reference roundf), and accumulates in a different
order. Hence the loose default tol of 1e-2; the stats are printed either way.
Measured with llama-cpp-python 0.3.36 on a tiny random Llama (hidden 64, 4 heads,
2 kv heads, 2 layers, vocab 320, logits up to ~3) against transformers: f32 GGUF
max abs diff 1.6e-6 (F32 KV; 1.1e-3 with the F16 KV cache); q8_0 and q4_0 GGUFs
vs transformers on the dequantised weights 3e-2 .. 4e-2, argmax 24/24 (so a
quantised export may need --tol 5e-2; judge by argmax agreement and KL too).
Without the q/k RoPE row permutation the f32 diff was 1.3, argmax 20/24.

Exit status: 0 if max abs diff <= tol, 1 if larger (or NaN, or shapes disagree),
2 on a usage / loading error (missing llama_cpp or gguf, unreadable file).
"""

import argparse
import json
import math
import sys


def die(msg, code=2):
    print(f"check_gguf_llamacpp: {msg}", file=sys.stderr)
    sys.exit(code)


def fmt_value(field):
    """Human-readable value of a GGUFReader field (arrays abbreviated)."""
    from gguf import GGUFValueType

    types = list(field.types)
    try:
        val = field.contents()
    except Exception:  # noqa: BLE001 - older gguf without contents()
        val = None
        if types and types[0] == GGUFValueType.STRING:
            val = bytes(field.parts[-1]).decode("utf-8", "replace")
        elif types and types[0] != GGUFValueType.ARRAY:
            val = field.parts[-1].tolist()
            val = val[0] if len(val) == 1 else val
    tname = "/".join(t.name for t in types)
    if isinstance(val, list):
        head = ", ".join(repr(v) for v in val[:8])
        return f"{tname}[{len(val)}] [{head}{', ...' if len(val) > 8 else ''}]"
    return f"{tname} {val!r}"


def print_header(path):
    try:
        from gguf import GGUFReader
    except ImportError as e:
        die(f"cannot import gguf: {e} (pip install gguf)")
    try:
        r = GGUFReader(path)
    except Exception as e:  # noqa: BLE001
        die(f"GGUFReader cannot read {path}: {e}")
    print(f"== {path}")
    print("-- metadata")
    for name, field in r.fields.items():
        if name.startswith("GGUF."):  # header pseudo-fields: version, tensor_count, kv_count
            print(f"  {name:45s} {field.parts[-1].tolist()[0]}")
            continue
        print(f"  {name:45s} {fmt_value(field)}")
    print(f"-- tensors ({len(r.tensors)})")
    for t in r.tensors:
        shape = [int(s) for s in t.shape]
        print(f"  {t.name:40s} {t.tensor_type.name:6s} ne={shape} n={int(t.n_elements)}")
    return r


def log_softmax(row):
    m = max(row)
    s = sum(math.exp(v - m) for v in row)
    return [v - m - math.log(s) for v in row]


def main():
    ap = argparse.ArgumentParser(description="Compare kiln logits with llama.cpp on a kiln GGUF export.")
    ap.add_argument("--gguf", required=True, help="GGUF file written by kiln")
    ap.add_argument("--logits-json", help='JSON {"tokens": [[...]], "logits": [[[...]]]} (required unless --no-run)')
    ap.add_argument("--tol", type=float, default=1e-2, help="max allowed abs logit diff (default 1e-2)")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp n_threads (default 2)")
    ap.add_argument("--kv-type", choices=["f32", "f16"], default="f32",
                    help="llama.cpp KV cache type (default f32; llama.cpp's own default is f16, "
                         "which alone gives ~1e-3 logit diffs on an f32 model)")
    ap.add_argument("--no-run", action="store_true", help="only print the GGUF metadata and tensors")
    args = ap.parse_args()

    print_header(args.gguf)
    if args.no_run:
        return 0
    if not args.logits_json:
        die("--logits-json is required unless --no-run")

    try:
        import numpy as np
        import llama_cpp
    except ImportError as e:
        die(f"cannot import numpy/llama_cpp: {e} (pip install llama-cpp-python)")

    with open(args.logits_json) as f:
        data = json.load(f)
    tokens = data["tokens"]
    ref = np.asarray(data["logits"], dtype=np.float64)
    if ref.ndim != 3 or ref.shape[0] != len(tokens):
        print(f"FAIL: logits shape {list(ref.shape)} does not match {len(tokens)} token rows")
        return 1
    t_max = max(len(row) for row in tokens)
    n_ctx = t_max + 8
    try:
        kv = 0 if args.kv_type == "f32" else 1  # GGML_TYPE_F32 = 0, GGML_TYPE_F16 = 1
        llm = llama_cpp.Llama(model_path=args.gguf, n_ctx=n_ctx, n_batch=n_ctx, logits_all=True,
                              verbose=False, n_threads=args.threads, type_k=kv, type_v=kv)
    except Exception as e:  # noqa: BLE001
        die(f"llama_cpp cannot load {args.gguf}: {e}")
    print(f"-- llama.cpp (llama-cpp-python {getattr(llama_cpp, '__version__', '?')}): "
          f"n_vocab {llm.n_vocab()}, n_ctx {n_ctx}, KV cache {args.kv_type}")

    ok = True
    all_diff, agree, n_pos = 0.0, 0, 0
    nll_k, nll_l, kl, n_nll = 0.0, 0.0, 0.0, 0
    for b, row in enumerate(tokens):
        llm.reset()
        llm.eval(row)
        got = np.asarray(llm.scores[: llm.n_tokens], dtype=np.float64)
        want = ref[b, : len(row)]
        if got.shape != want.shape:
            print(f"FAIL: row {b}: llama.cpp logits {list(got.shape)} vs kiln {list(want.shape)}")
            ok = False
            continue
        diff = np.abs(got - want)
        t, v = np.unravel_index(int(np.nanargmax(diff)) if np.isfinite(diff).any() else 0, diff.shape)
        mx = float(diff.max())
        ag = int((got.argmax(-1) == want.argmax(-1)).sum())
        print(f"row {b}: max abs diff {mx:.3e} at [t={t}, v={v}] (llama.cpp {got[t, v]:.8g}, "
              f"kiln {want[t, v]:.8g}); mean abs diff {float(diff.mean()):.3e}; "
              f"argmax agreement {ag}/{len(row)}")
        all_diff = max(all_diff, mx) if not math.isnan(mx) else float("nan")
        agree += ag
        n_pos += len(row)
        for p in range(len(row) - 1):
            lk = log_softmax(want[p].tolist())
            ll = log_softmax(got[p].tolist())
            nxt = row[p + 1]
            nll_k -= lk[nxt]
            nll_l -= ll[nxt]
            kl += sum(math.exp(a) * (a - c) for a, c in zip(lk, ll))
            n_nll += 1

    if n_nll:
        print(f"next-token NLL: kiln {nll_k / n_nll:.6f} (ppl {math.exp(nll_k / n_nll):.4f}), "
              f"llama.cpp {nll_l / n_nll:.6f} (ppl {math.exp(nll_l / n_nll):.4f}); "
              f"mean KL(kiln || llama.cpp) {kl / n_nll:.3e} over {n_nll} positions")
    print(f"max |kiln logit| {float(np.abs(ref).max()):.4g}")
    print(f"overall: max abs diff {all_diff:.3e}, argmax agreement {agree}/{n_pos} "
          f"({agree / max(n_pos, 1):.4f}), tol {args.tol:g}")
    if not ok or not all_diff <= args.tol:  # also catches NaN
        print(f"FAIL: max abs diff {all_diff:.3e} > tol {args.tol:g}" if ok else "FAIL: shape mismatch")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
