#!/usr/bin/env python3
"""Kiln logits of a fixed text, cut into rows of at most --row characters (the model
was trained on windows of max_seq_len = 64, so every row stays in the trained
context), merged into one {"tokens": [[...]], "logits": [[[...]]]} file that
tests/reference/check_gguf_llamacpp.py evaluates row by row.

    logits.py KILN RUN_DIR TEXT OUT.json [--row 64] [-- extra kiln eval args]
"""
import json, subprocess, sys, tempfile, os

args = sys.argv[1:]
extra = []
if "--" in args:
    i = args.index("--")
    args, extra = args[:i], args[i + 1:]
row = 64
if "--row" in args:
    i = args.index("--row")
    row = int(args[i + 1])
    del args[i:i + 2]
kiln, run, text, out = args
tokens, logits = [], []
with tempfile.TemporaryDirectory() as d:
    for k in range(0, len(text), row):
        chunk = text[k:k + row]
        f = os.path.join(d, f"{k}.json")
        subprocess.run([kiln, "eval", run, "--text", chunk, "--logits-out", f, *extra],
                       check=True, stdout=subprocess.DEVNULL)
        j = json.load(open(f))
        tokens += j["tokens"]
        logits += j["logits"]
json.dump({"tokens": tokens, "logits": logits, "text": text, "row_chars": row,
           "kiln_eval_args": extra}, open(out, "w"))
print(f"wrote {out}: {len(tokens)} rows {[len(t) for t in tokens]}", file=sys.stderr)
