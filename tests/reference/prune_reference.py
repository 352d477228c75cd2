#!/usr/bin/env python3
"""Golden pruning masks: magnitude and Wanda, unstructured and N:M.

Regenerate (from the repository root; a venv with ``pip install torch safetensors``,
generated with torch 2.15.0):

    $PY tests/reference/prune_reference.py

writes tests/fixtures/prune/masks.safetensors (float32; metadata {"generator":
"tests/reference/prune_reference.py torch=..."}). Deterministic: fixed seeds, CPU.

The masks follow locuslab/wanda ``lib/prune.py`` (``prune_magnitude``,
``prune_wanda`` with ``use_variant=False``) on one projection, with two
deliberate changes that Kiln makes too (and this script checks against the
original code paths):
  * magnitude, unstructured: Wanda's baseline prunes ``|W| <= sorted[k]``
    (k + 1 weights, more on ties at the threshold); here exactly the first
    k = int(numel * sparsity) of a stable ascending sort of ``|W|`` flattened
    in PyTorch's [out, in] order. Checked: the baseline's mask contains ours
    and prunes exactly the (k+1)-th weight more when no tie sits at the threshold.
  * N:M: Wanda prunes ``torch.topk(tmp, prune_n, largest=False)`` of each group
    of M inputs, where "2:4" means prune 2; topk's choice among equal scores is
    unspecified. Here ``N:M`` keeps N (NVIDIA's meaning; 2:4 and 4:8 prune the
    same number either way) and prunes the first M - N of a stable sort. Checked:
    equal to topk's set in every group without ties.
Wanda's score is ``|W_ij| * sqrt(sum_t X_tj^2)`` (its ``scaler_row`` also divides
by the sample count: a constant per projection, left out so the product rounds
once), compared per output row; magnitude compares across the whole projection.
Scores are float64. Weights are multiples of 1/16 and activations multiples of
1/4, so every sum of squares is exact in float64 whatever the summation order:
Kiln's masks must equal these bit for bit, including ties.

masks.safetensors
-----------------
  NAME.w   [out, in]  weight, PyTorch Linear layout (Kiln stores [in, out])
  NAME.x   [tokens, in]  calibration inputs
  NAME.keep.CASE  [out, in]  1 = kept, 0 = pruned
  NAME in: a ([16, 32], x [24, 32]; columns 3 and 17 of x equal, column 9 zero,
           so Wanda scores tie), b ([8, 64], x [40, 64]; weights from {0, +-1/16,
           +-2/16}: many magnitude ties)
  CASE in: magnitude_s50, magnitude_s30, magnitude_2of4, magnitude_1of4,
           wanda_s50, wanda_s30, wanda_2of4, wanda_1of4
"""

import os

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "prune", "masks.safetensors")


def wanda_metric(w, x):
    scaler_row = (x.double() ** 2).sum(0)  # [in]
    return w.double().abs() * torch.sqrt(scaler_row.reshape(1, -1))  # [out, in]


def per_row(metric, sparsity):
    """prune_wanda, unstructured (use_variant=False): True = pruned."""
    mask = torch.zeros_like(metric, dtype=torch.bool)
    order = torch.sort(metric, dim=-1, stable=True)[1]
    mask.scatter_(1, order[:, : int(metric.shape[1] * sparsity)], True)
    return mask


def per_layer(metric, sparsity):
    """prune_magnitude, unstructured, exactly k pruned: True = pruned."""
    k = int(metric.numel() * sparsity)
    order = torch.sort(metric.flatten(), stable=True)[1]
    flat = torch.zeros(metric.numel(), dtype=torch.bool)
    flat[order[:k]] = True
    mask = flat.reshape(metric.shape)
    # Wanda's own baseline: W_metric <= sorted[k].
    sorted_vals = torch.sort(metric.flatten())[0]
    baseline = metric <= sorted_vals[k]
    assert bool((baseline | ~mask).all()), "baseline must contain ours"
    if k + 1 < metric.numel() and sorted_vals[k] != sorted_vals[k - 1] and sorted_vals[k] != sorted_vals[k + 1]:
        assert int(baseline.sum()) == k + 1
    return mask


def n_of_m(metric, n_keep, m):
    """prune_wanda / prune_magnitude N:M, keeping n_keep of every m: True = pruned."""
    prune_n = m - n_keep
    mask = torch.zeros_like(metric, dtype=torch.bool)
    for ii in range(0, metric.shape[1], m):
        tmp = metric[:, ii : ii + m]
        idx = torch.sort(tmp, dim=1, stable=True)[1][:, :prune_n]
        mask.scatter_(1, ii + idx, True)
        # Same set as Wanda's topk wherever a row's group has no ties.
        top = torch.topk(tmp, prune_n, dim=1, largest=False)[1]
        for r in range(tmp.shape[0]):
            if len(set(tmp[r].tolist())) == tmp.shape[1]:
                assert set(top[r].tolist()) == set(idx[r].tolist())
    return mask


def layer_a():
    g = torch.Generator().manual_seed(1)
    w = torch.randint(-24, 25, (16, 32), generator=g).float() / 16
    x = torch.randint(-12, 13, (24, 32), generator=g).float() / 4
    x[:, 17] = x[:, 3]
    x[:, 9] = 0
    return w, x


def layer_b():
    g = torch.Generator().manual_seed(2)
    w = torch.randint(-2, 3, (8, 64), generator=g).float() / 16
    x = torch.randint(-8, 9, (40, 64), generator=g).float() / 4
    return w, x


def main():
    out = {}
    for name, (w, x) in [("a", layer_a()), ("b", layer_b())]:
        out[f"{name}.w"] = w.contiguous()
        out[f"{name}.x"] = x.contiguous()
        metrics = {"magnitude": w.double().abs(), "wanda": wanda_metric(w, x)}
        for method, metric in metrics.items():
            unstructured = per_layer if method == "magnitude" else per_row
            cases = {
                "s50": unstructured(metric, 0.5),
                "s30": unstructured(metric, 0.3),
                "2of4": n_of_m(metric, 2, 4),
                "1of4": n_of_m(metric, 1, 4),
            }
            for case, pruned in cases.items():
                out[f"{name}.keep.{method}_{case}"] = (~pruned).float().contiguous()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file(out, OUT, metadata={"generator": f"tests/reference/prune_reference.py torch={torch.__version__}"})
    print(f"wrote {OUT} ({len(out)} tensors)")


if __name__ == "__main__":
    main()
