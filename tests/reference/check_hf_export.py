#!/usr/bin/env python3
"""Check a Kiln Hugging Face export against logits computed by the Rust `kiln`.

Manual check for the lead (not run in CI):

    /work/venv/bin/python tests/reference/check_hf_export.py \\
        --export-dir EXPORT_DIR --logits-json FILE [--tol 1e-4]

EXPORT_DIR is a directory written by kiln's HF export (config.json, model.safetensors,
optionally tokenizer.json). FILE is JSON written by kiln:

    {"tokens": [[int, ...], ...], "logits": [[[float, ...], ...], ...]}

with tokens [B][T] and logits [B][T][V]. Extra keys are ignored (so a
tests/fixtures/llama/<variant>/golden.json works as FILE too).

The directory is loaded with ``AutoModelForCausalLM.from_pretrained(DIR, dtype=float32)``
(eager attention, CPU); if DIR/tokenizer.json exists it is loaded with
``tokenizers.Tokenizer.from_file`` and checked against the model's vocabulary. The tokens
are run through the model and the max |HF logit - kiln logit| is printed.

Exit status: 0 if the max abs diff <= tol, 1 if it is larger (or shapes disagree),
2 on a usage / loading error.

Self-test against the committed fixtures:

    /work/venv/bin/python tests/reference/check_hf_export.py \\
        --export-dir tests/fixtures/llama/gqa --logits-json tests/fixtures/llama/gqa/golden.json
"""

import argparse
import json
import os
import sys


def die(msg, code=2):
    print(f"check_hf_export: {msg}", file=sys.stderr)
    sys.exit(code)


def main():
    ap = argparse.ArgumentParser(description="Compare kiln logits with transformers on a kiln HF export.")
    ap.add_argument("--export-dir", required=True, help="directory with config.json + model.safetensors")
    ap.add_argument("--logits-json", required=True, help='JSON {"tokens": [[...]], "logits": [[[...]]]}')
    ap.add_argument("--tol", type=float, default=1e-4, help="max allowed abs logit diff (default 1e-4)")
    args = ap.parse_args()

    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        die(f"cannot import torch/transformers: {e}")

    if not os.path.isfile(os.path.join(args.export_dir, "config.json")):
        die(f"{args.export_dir}/config.json not found")
    try:
        with open(args.logits_json) as f:
            data = json.load(f)
        tokens = torch.tensor(data["tokens"], dtype=torch.long)
        ref = torch.tensor(data["logits"], dtype=torch.float32)
    except (OSError, ValueError, KeyError, TypeError) as e:
        die(f"cannot read {args.logits_json}: {e!r}")
    if tokens.dim() == 1:
        tokens = tokens[None]
    if ref.dim() == 2:
        ref = ref[None]
    if tokens.dim() != 2 or ref.dim() != 3:
        die(f"expected tokens [B,T] and logits [B,T,V], got {list(tokens.shape)} and {list(ref.shape)}")

    try:
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    torch.manual_seed(0)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            args.export_dir, dtype=torch.float32, attn_implementation="eager"
        ).eval()
    except Exception as e:  # noqa: BLE001 - report any loading failure
        die(f"from_pretrained({args.export_dir}) failed: {e!r}")
    vocab = model.config.vocab_size
    print(f"model: {type(model).__name__}, vocab {vocab}, "
          f"{sum(p.numel() for p in model.parameters())} params, "
          f"tie_word_embeddings={getattr(model.config, 'tie_word_embeddings', None)}")

    tok_path = os.path.join(args.export_dir, "tokenizer.json")
    if os.path.isfile(tok_path):
        try:
            from tokenizers import Tokenizer
            tok = Tokenizer.from_file(tok_path)
        except Exception as e:  # noqa: BLE001
            die(f"Tokenizer.from_file({tok_path}) failed: {e!r}")
        tv = tok.get_vocab_size(with_added_tokens=True)
        print(f"tokenizer: {tv} tokens; first row decodes to {tok.decode(tokens[0].tolist())!r}")
        if tv > vocab:
            print(f"FAIL: tokenizer vocab {tv} > model vocab {vocab}")
            sys.exit(1)
    else:
        print("tokenizer: no tokenizer.json in export dir (skipped)")

    if tokens.min() < 0 or tokens.max() >= vocab:
        print(f"FAIL: token ids outside [0, {vocab}): min {tokens.min().item()} max {tokens.max().item()}")
        sys.exit(1)

    with torch.no_grad():
        logits = model(input_ids=tokens).logits.float()
    if logits.shape != ref.shape:
        print(f"FAIL: logits shape HF {list(logits.shape)} vs kiln {list(ref.shape)}")
        sys.exit(1)

    diff = (logits - ref).abs()
    maxdiff = diff.max().item()
    b, t, v = (int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
    scale = ref.abs().max().item()
    print(f"tokens {list(tokens.shape)}, logits {list(ref.shape)}, max |kiln logit| {scale:.6g}")
    print(f"max abs logit diff {maxdiff:.3e} at [{b},{t},{v}] "
          f"(HF {logits[b, t, v].item():.8g}, kiln {ref[b, t, v].item():.8g}); "
          f"mean abs diff {diff.mean().item():.3e}; "
          f"argmax agreement {(logits.argmax(-1) == ref.argmax(-1)).float().mean().item():.4f}")
    if not maxdiff <= args.tol:  # also catches NaN
        print(f"FAIL: max abs diff {maxdiff:.3e} > tol {args.tol:g}")
        sys.exit(1)
    print(f"OK: max abs diff {maxdiff:.3e} <= tol {args.tol:g}")


if __name__ == "__main__":
    main()
