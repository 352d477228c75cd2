#!/usr/bin/env python3
"""Check a Kiln RWKV-7 export (official BlinkDL .pth layout) against Kiln's logits.

Manual check for the lead (not run in CI):

    /work/venv/bin/python tests/reference/check_rwkv7_export.py MODEL.pth FILE [--tol 1e-4]

MODEL.pth is a torch.save'd dict {official name: tensor} as the RWKV-LM trainer
writes it (emb.weight, blocks.{i}.att.r_k [H, N], ... see
tests/reference/rwkv7_parity.py for the full list). A MODEL.safetensors with the
same names is accepted too (it is re-saved as a temporary .pth first). FILE is JSON
written by kiln:

    {"tokens": [[int, ...], ...], "logits": [[[float, ...], ...], ...]}

with tokens [B][T] and logits [B][T][V]; extra keys are ignored (so
tests/fixtures/rwkv7/tiny/golden.json works as FILE).

Oracle: pip ``rwkv`` 0.8.32 with ``RWKV_V7_ON=1`` (class ``RWKV_x070``), strategy
``cpu fp32``. Each row is run in GPT mode, ``model.forward(row, None,
full_output=True)`` (a one-token row goes through the RNN path), and the max
|oracle logit - kiln logit| over all rows is printed as one JSON line:

    {"rows": B, "max_abs_diff": float, "n_layer": int, "n_embd": int, "head_size": int}

Exit status: 0 if max_abs_diff <= tol, 1 if it is larger (or shapes disagree),
2 on a usage / loading error.

The package reads n_head, head_size from blocks.0.att.r_k (must be 2-D [H, N]),
vocab and n_embd from emb.weight, and needs blocks.0.ln0.{weight,bias};
blocks.0.att.v0/v1/v2 may be absent.
"""

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import warnings


def die(msg, code=2):
    print(f"check_rwkv7_export: {msg}", file=sys.stderr)
    sys.exit(code)


def load_model(path, tmp):
    """Returns the pip rwkv RWKV_x070 model for path (.pth or .safetensors)."""
    os.environ["RWKV_V7_ON"] = "1"
    os.environ["RWKV_JIT_ON"] = "0"
    os.environ.pop("RWKV_CUDA_ON", None)
    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        stem = os.path.join(tmp, "model")
        torch.save(load_file(path), stem + ".pth")
    elif path.endswith(".pth"):
        stem = path[: -len(".pth")]  # the package appends ".pth" itself
    else:
        die(f"{path}: expected a .pth or .safetensors file")
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script deprecation
        from rwkv.model import RWKV  # prints a banner

        return RWKV(model=stem, strategy="cpu fp32")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="MODEL.pth (or .safetensors) in the official RWKV-7 layout")
    ap.add_argument("logits_json", help='{"tokens": [[...]], "logits": [[[...]]]} written by kiln')
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    if not os.path.isfile(a.model):
        die(f"{a.model}: no such file")
    try:
        with open(a.logits_json) as f:
            data = json.load(f)
        tokens, want = data["tokens"], data["logits"]
    except (OSError, ValueError, KeyError) as e:
        die(f"{a.logits_json}: {e!r}")
    if not tokens or len(tokens) != len(want):
        die(f"{a.logits_json}: {len(tokens)} token rows vs {len(want)} logit rows")

    import torch

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            model = load_model(a.model, tmp)
        except SystemExit:
            raise
        except Exception as e:  # noqa: BLE001 - report any loader failure as exit 2
            die(f"loading {a.model} with pip rwkv failed: {e!r}")

    max_diff, bad_shape = 0.0, None
    for i, (row, ref) in enumerate(zip(tokens, want)):
        ref = torch.tensor(ref, dtype=torch.float32)
        if len(row) == 1:
            out, _ = model.forward(int(row[0]), None)
            out = out.float().unsqueeze(0)
        else:
            out, _ = model.forward([int(t) for t in row], None, full_output=True)
            out = out.float()
        if out.shape != ref.shape:
            bad_shape = f"row {i}: oracle logits {list(out.shape)} vs kiln {list(ref.shape)}"
            max_diff = float("inf")
            break
        max_diff = max(max_diff, (out - ref).abs().max().item())

    print(json.dumps(dict(rows=len(tokens), max_abs_diff=max_diff, n_layer=model.args.n_layer,
                          n_embd=model.args.n_embd, head_size=model.args.head_size)))
    if bad_shape:
        print(f"check_rwkv7_export: {bad_shape}", file=sys.stderr)
    sys.exit(0 if max_diff <= a.tol else 1)


if __name__ == "__main__":
    main()
