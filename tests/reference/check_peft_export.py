#!/usr/bin/env python3
"""Check a Kiln LoRA adapter export against logits computed by the Rust `kiln`, via peft.

Manual check for the lead (not run in CI); the venv needs
``pip install torch transformers==5.23.0 peft safetensors``:

    $PY tests/reference/check_peft_export.py \\
        --base-dir BASE_DIR --adapter-dir ADAPTER_DIR --logits-json FILE [--tol 1e-4]

BASE_DIR is a Hugging Face model folder (config.json + model.safetensors; Llama or
Mamba, the class is chosen from config.json's model_type). ADAPTER_DIR is a peft
adapter folder (adapter_config.json + adapter_model.safetensors) written by kiln.
FILE is JSON written by kiln, the same format as check_hf_export.py:

    {"tokens": [[int, ...], ...], "logits": [[[float, ...], ...], ...]}

with tokens [B][T] and logits [B][T][V] of the base model WITH the adapter applied.
Extra keys are ignored.

The base is loaded with ``from_pretrained(BASE_DIR, dtype=float32)`` (CPU, eager
attention for Llama), the adapter with ``peft.PeftModel.from_pretrained(base,
ADAPTER_DIR)``; the tokens are run (1) through the unmerged PeftModel and (2) through
``merge_and_unload()``, and the max |HF logit - kiln logit| of each is printed.

Exit status: 0 if both max abs diffs <= tol, 1 if either is larger (or shapes
disagree), 2 on a usage / loading error.

Note: peft 0.21 refuses LoRA on Mamba's ``out_proj`` and ``conv1d`` (ValueError at
load); such an adapter fails here with exit 2.
"""

import argparse
import json
import os
import sys


def die(msg, code=2):
    print(f"check_peft_export: {msg}", file=sys.stderr)
    sys.exit(code)


def compare(tag, logits, ref, tol):
    """Print the diff of HF `logits` vs kiln `ref`; return True if within tol."""
    if logits.shape != ref.shape:
        print(f"FAIL ({tag}): logits shape HF {list(logits.shape)} vs kiln {list(ref.shape)}")
        return False
    diff = (logits - ref).abs()
    maxdiff = diff.max().item()
    import torch
    b, t, v = (int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
    print(f"{tag}: max abs logit diff {maxdiff:.3e} at [{b},{t},{v}] "
          f"(HF {logits[b, t, v].item():.8g}, kiln {ref[b, t, v].item():.8g}); "
          f"mean abs diff {diff.mean().item():.3e}; "
          f"argmax agreement {(logits.argmax(-1) == ref.argmax(-1)).float().mean().item():.4f}")
    if not maxdiff <= tol:  # also catches NaN
        print(f"FAIL ({tag}): max abs diff {maxdiff:.3e} > tol {tol:g}")
        return False
    return True


def main():
    ap = argparse.ArgumentParser(description="Compare kiln logits with peft on a kiln LoRA export.")
    ap.add_argument("--base-dir", required=True, help="HF model directory: config.json + model.safetensors")
    ap.add_argument("--adapter-dir", required=True,
                    help="peft adapter directory: adapter_config.json + adapter_model.safetensors")
    ap.add_argument("--logits-json", required=True, help='JSON {"tokens": [[...]], "logits": [[[...]]]}')
    ap.add_argument("--tol", type=float, default=1e-4, help="max allowed abs logit diff (default 1e-4)")
    args = ap.parse_args()

    try:
        import torch
        import transformers
        import peft
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, LlamaForCausalLM, MambaForCausalLM
    except ImportError as e:
        die(f"cannot import torch/transformers/peft: {e}")

    cfg_path = os.path.join(args.base_dir, "config.json")
    if not os.path.isfile(cfg_path):
        die(f"{cfg_path} not found")
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        if not os.path.isfile(os.path.join(args.adapter_dir, f)):
            die(f"{args.adapter_dir}/{f} not found")
    try:
        with open(cfg_path) as f:
            model_type = json.load(f).get("model_type")
        with open(args.logits_json) as f:
            data = json.load(f)
        tokens = torch.tensor(data["tokens"], dtype=torch.long)
        ref = torch.tensor(data["logits"], dtype=torch.float32)
    except (OSError, ValueError, KeyError, TypeError) as e:
        die(f"cannot read inputs: {e!r}")
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
    cls = {"llama": LlamaForCausalLM, "mamba": MambaForCausalLM}.get(model_type, AutoModelForCausalLM)
    kwargs = {"attn_implementation": "eager"} if model_type == "llama" else {}
    try:
        base = cls.from_pretrained(args.base_dir, dtype=torch.float32, **kwargs).eval()
    except Exception as e:  # noqa: BLE001 - report any loading failure
        die(f"{cls.__name__}.from_pretrained({args.base_dir}) failed: {e!r}")
    vocab = base.config.vocab_size
    try:
        model = PeftModel.from_pretrained(base, args.adapter_dir).eval()
    except Exception as e:  # noqa: BLE001
        die(f"PeftModel.from_pretrained({args.adapter_dir}) failed: {e!r}")
    lora = [n for n, _ in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]
    pc = model.peft_config["default"]
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    print(f"base: {type(base).__name__} (model_type {model_type}), vocab {vocab}, "
          f"tie_word_embeddings={getattr(base.config, 'tie_word_embeddings', None)}")
    print(f"adapter: {pc.peft_type}, r {pc.r}, alpha {pc.lora_alpha}, rslora {pc.use_rslora}, "
          f"targets {sorted(pc.target_modules) if pc.target_modules else None}, {len(lora)} LoRA tensors")
    if not lora:
        print("FAIL: the adapter injected no LoRA tensors")
        sys.exit(1)

    if tokens.min() < 0 or tokens.max() >= vocab:
        print(f"FAIL: token ids outside [0, {vocab}): min {tokens.min().item()} max {tokens.max().item()}")
        sys.exit(1)
    print(f"tokens {list(tokens.shape)}, logits {list(ref.shape)}, max |kiln logit| {ref.abs().max().item():.6g}")

    with torch.no_grad():
        unmerged = model(input_ids=tokens, use_cache=False).logits.float()
        merged_model = model.merge_and_unload().eval()
        merged = merged_model(input_ids=tokens, use_cache=False).logits.float()
    ok_u = compare("peft unmerged", unmerged, ref, args.tol)
    ok_m = compare("merged (merge_and_unload)", merged, ref, args.tol)
    if not (ok_u and ok_m):
        sys.exit(1)
    print(f"OK: both within tol {args.tol:g}")


if __name__ == "__main__":
    main()
