#!/usr/bin/env python3
"""Fake-quantisation (QAT, STE) and GGUF q8_0 / q4_0 block reference fixtures.

Regenerate (from the repository root; the venv needs
``pip install torch numpy safetensors gguf`` and, optionally, ``pip install --no-deps
torchao``; generated with torch 2.15.0, gguf 0.19.0, torchao 0.18.0):

    $PY tests/reference/quant_reference.py

writes tests/fixtures/quant/{fake_quant,gguf_blocks}.safetensors (all float32 unless
stated; safetensors metadata {"generator": "tests/reference/quant_reference.py
 torch=... gguf=... torchao=..."}). Deterministic: fixed
seeds, CPU, no threads-dependent reductions.

fake_quant.safetensors  (specs.md section 8, "Fake quant with STE")
--------------------------------------------------------------------
  w    [8, 128]  input weight, PyTorch Linear layout [out, in] (burn's Linear stores
                 [in, out]: transpose before comparing). randn * 0.05 (seed 1234) with
                 hand-placed rows:
                   row 0  plain randn, plus 3 "near-tie" entries placed so that
                          round(w / s) != round(w * (1 / s)) for the int8 per-channel
                          scale s of that row (see the reciprocal note below)
                   row 1  int8 ties: +-127/128 at columns 0, 32, 64, 96 (so s = 2^-7
                          exactly for int8 per-channel AND every int8 group size), and
                          exact ties w = (k + 0.5) / 128, plus exact ties for the
                          half scale 2^-8 (w = (k + 0.5) / 256, k in 127, 128, -128,
                          -129, -130)
                   row 2  int4 ties: +-7/16 at columns 0, 32, 64, 96 (s = 1/16 for int4
                          at every granularity), exact ties w = (k + 0.5) / 16 for
                          k = -8 .. 6, and -7/16 (hits q = -7)
                   row 3  all zeros (amax == 0)
                   row 4  one outlier +1.5 at column 77
                   row 5  outliers -2.0 at column 5 (largest |w| is negative), +1.0 at 100
                   row 6  tiny: randn * 1e-6 in columns 0..63, exact zeros in 64..127
                          (all-zero groups for g = 32 and 64)
                   row 7  plain randn
  u    [8, 128]  the upstream gradient (randn, seed 1235)

  For each variant NAME:
    fq.NAME     [8, 128]  torch.fake_quantize_per_channel_affine output
    grad.NAME   [8, 128]  d sum(fq(w) * u) / d w  (torch autograd; the STE)
    scale.NAME  [8] (per-channel) or [8, 128 / g] (per-group, row-major: scale[r, j]
                covers w[r, j*g:(j+1)*g])
    q.NAME      [8, 128] int8, the integer codes clamp(round(w * (1/s)), qmin, qmax)
  NAME in:
    int8_channel, int4_channel,
    int8_group32, int8_group64, int8_group128,
    int4_group32, int4_group64, int4_group128,
    int8_channel_halfscale, int4_channel_halfscale
  (group128 == channel here since in = 128; kept to test the group code path.)

  Formula (bits b, qmin = -2^(b-1), qmax = 2^(b-1) - 1; int4: -8..7, int8: -128..127):
    amax = max |w| over the channel (row) or group, in float32
    s    = amax / (2^(b-1) - 1) in float32        (int8: / 127, int4: / 7)
           if amax == 0: s = 1.0                   (rows 3 and the zero groups of row 6;
                                                    output 0, gradient u)
           *_halfscale: s = (amax / (2^(b-1) - 1)) * 0.5 (float32 ops in that order)
    zero_point = 0
    fq   = s * clamp(round_half_even(w * inv), qmin, qmax),  inv = 1.0f / s  (float32)
    grad = u where qmin <= round_half_even(w * inv) <= qmax, else 0
  Per-group: w.reshape(8 * 128 / g, g) -> per-channel on axis 0 -> reshape(8, 128).

  Reciprocal note: torch's CPU kernel computes inv = 1.0f / s once and rounds
  w * inv, NOT w / s (aten fake_quant_per_channel: nearbyint(self * inv_scale)).
  The two differ for values within an ulp of a tie; row 0 has three such entries
  (columns 10, 20, 30) where the int8_channel code differs by one between the two.
  torchao's _quantize_affine also uses input * (1.0 / scale). Kiln must multiply by
  the reciprocal to be bit-exact.

  qmin asymmetry: with s = amax / (2^(b-1) - 1), |w / s| <= 2^(b-1) - 1 (up to one
  ulp), so nothing is clamped, q = -8 (int4) / -128 (int8) is never produced and
  grad == u everywhere (asserted). The *_halfscale variants double w / s. The mask
  is taken on the ROUNDED value, so (qmin even, qmax odd) an entry keeps its
  gradient iff w * (1/s) lies in [qmin - 0.5, qmax + 0.5): int8 [-128.5, 127.5),
  int4 [-8.5, 7.5). So w / s = -128.5 -> -128 (ties-even) passes with gradient u,
  while w / s = +127.5 -> 128 is clamped to 127 with gradient 0, and -129.5 -> -130 is
  clamped to -128 with gradient 0 (row 1; row 2 has the int4 analogues 7.5 -> 8
  clamped, -8.5 -> -8 kept, -7.5 -> -8 kept).

  Dynamic per-token int8 activations (symmetric, llama.cpp-like):
    x                  [5, 128]  rows: 0 randn, 1 randn * 3 with +20 at column 7,
                                 2 zeros, 3 exact ties for s = 2^-7 (amax 127/128),
                                 4 randn * 0.01
    fq.act_int8_token  [5, 128]  per row s = amax / 127 (1.0 if amax == 0),
                                 torch.fake_quantize_per_channel_affine(x, s, 0, axis 0,
                                 -128, 127) = s * clamp(round_half_even(x * (1/s)),
                                 -128, 127); -128 is never reached (|q| <= 127)
    scale.act_int8_token [5]
  torchao (only if it imports; it is, with torchao 0.18.0):
    fq.act_torchao     [5, 128]  torchao IntxFakeQuantizer(IntxFakeQuantizeConfig(
                                 torch.int8, "per_token", is_symmetric=False)), i.e. the
                                 8da4w activation fake quant, ASYMMETRIC, per row:
                                   mn = min(min(x), 0), mx = max(max(x), 0)
                                   s  = max((mx - mn) / 255, 2^-126)   (float32)
                                   zp = clamp(-128 - round_half_even(mn / s), -128, 127)
                                   q  = clamp(round_half_even(x * (1/s)) + zp, -128, 127)
                                   fq = (q - zp) * s
    scale.act_torchao  [5], zp.act_torchao [5] int32 (torchao's own qparams)
    fq.torchao_int4_group32  [8, 128]  torchao's weight fake quant
                                 IntxFakeQuantizeConfig(torch.int4, group_size=32,
                                 is_symmetric=True) on w (forward only: torchao 0.18's
                                 backward is not the plain STE mask, e.g. it is 0 at
                                 entries with w / s = 7.41, so no gradient is recorded).
                                 NOTE: torchao's SYMMETRIC scale is amax / 7.5 (=
                                 amax / ((qmax - qmin) / 2)), not the spec's amax / 7, so
                                 -amax -> -7.5 -> -8 and +amax -> +7.5 -> 8 -> clamp 7:
                                 the group's max element is clipped (its gradient is 0).
                                 s = max(amax / 7.5, 2^-126); fq = s * clamp(
                                 round_half_even(w * (1/s)), -8, 7) (asserted).
                                 Also scale.torchao_int4_group32 [8, 4].
                                 Recorded for comparison only; the spec formula is above.

gguf_blocks.safetensors  (ggml quantize_row_q8_0_ref / quantize_row_q4_0_ref)
-----------------------------------------------------------------------------
  x          [16, 32]  float32; row i = GGUF block i (a flat tensor of 512 values,
                       x.reshape(16, 32)). Blocks:
                         0  all zeros
                         1  randn, largest |x| negative (-3.0 at column 4)
                         2  randn, largest |x| positive (+3.0 at column 9), and -3.0 at
                            column 20 AFTER it (q4_0: d = -3/8, the -3.0 maps to
                            x/d + 8.5 = 16.5 -> min(15, 16) = 15, value 7 d = -2.625)
                         3  q8_0 exact ties: +127/64 at column 0 (d = 1/64, 1/d = 64
                            exactly), x = (k + 0.5) / 64: roundf rounds half AWAY from
                            zero (0.5 -> 1, 2.5 -> 3, -0.5 -> -1), and x = nextafter(0.5,
                            0) / 64 (roundf -> 0; floor(v + 0.5) would give 1)
                         4  q4_0 exact ties: -1/2 at column 3 and +1/2 at column 10 (equal
                            |x|: the FIRST one wins, max = -0.5, d = 1/16), x = (k + 0.5)
                            / 16: x/d + 8.5 is an exact integer, so q4_0 rounds half UP
                            (towards +inf)
                         5  tiny: randn * 1e-3 (d = amax/127 ~ 2e-5 is an f16 subnormal)
                         6  tiny: randn * 1e-8 (d rounds to 0 in f16: q is computed
                            with the f32 1/d, but dequantises to 0)
                         7  randn with a huge outlier +1000 at column 17
                         8  randn * 100 (large, d still finite in f16)
                         9..15  randn
  bytes.q8_0 [16, 34] uint8  gguf.quants.quantize(x, Q8_0): per block f16 d
                             (little-endian, 2 bytes) then 32 int8 q
  bytes.q4_0 [16, 18] uint8  gguf.quants.quantize(x, Q4_0): per block f16 d then 16
                             bytes, byte j = q[j] | (q[j + 16] << 4), q in 0..15
  deq.q8_0   [16, 32]        gguf.quants.dequantize(bytes.q8_0, Q8_0) = f16(d) * q
  deq.q4_0   [16, 32]        gguf.quants.dequantize(bytes.q4_0, Q4_0) = f16(d) * (q - 8)
  q.q8_0     [16, 32] int8   the q8_0 codes
  q.q4_0     [16, 32] uint8  the q4_0 codes 0..15 (unpacked, element order)
  d.q8_0, d.q4_0  [16]       the f32 d before the f16 cast (amax / 127, max / -8)

  Formulas (specs.md section 8), checked here by an independent NumPy implementation
  that must reproduce the gguf package's bytes exactly (asserted):
    q8_0: amax = max |x|; d = amax / 127 (f32); id = d != 0 ? 1 / d : 0 (f32);
          q = roundf(x * id) (half away from zero); bytes = f16(d) ++ int8 q
    q4_0: max = the signed x of largest |x| (first occurrence); d = max / -8 (f32);
          id = d != 0 ? 1 / d : 0; q = min(15, trunc(x * id + 8.5f)) (f32 mul then
          f32 add, no FMA); bytes = f16(d) ++ packed nibbles
    f16(d): IEEE round-to-nearest-even (numpy astype(float16); ggml's F16C path).
"""

import math
import os

import numpy as np
import torch
from safetensors.torch import save_file

import gguf
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

try:
    import torchao
    from torchao.quantization.qat import IntxFakeQuantizeConfig
    from torchao.quantization.qat.fake_quantizer import IntxFakeQuantizer
except Exception as e:  # noqa: BLE001 - optional
    print(f"torchao unavailable ({e!r}); skipping the torchao keys")
    torchao = None

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "quant")
OUT_DIM, IN_DIM = 8, 128
W_SEED, U_SEED, X_SEED, G_SEED = 1234, 1235, 1236, 1237


# --------------------------------------------------------------------------- fake quant

def make_w():
    g = torch.Generator().manual_seed(W_SEED)
    w = torch.randn(OUT_DIM, IN_DIM, generator=g) * 0.05
    f = torch.float32

    # row 1: int8 ties, s = 2^-7 at every granularity
    w[1, [0, 32, 64, 96]] = torch.tensor([127, -127, 127, -127], dtype=f) / 128
    ks = [0, 1, 2, -1, -2, -3, 10, -11, 63, -64, 125, -127]
    for i, k in enumerate(ks):
        w[1, 1 + 2 * i + (i // 8) * 16] = (k + 0.5) / 128
    # half-scale (2^-8) ties: 127.5, 128.5, -127.5, -128.5, -129.5
    for i, k in enumerate([127, 128, -128, -129, -130]):
        w[1, 40 + 3 * i] = (k + 0.5) / 256

    # row 2: int4 ties, s = 1/16 at every granularity
    w[2, [0, 32, 64, 96]] = torch.tensor([7, -7, 7, -7], dtype=f) / 16
    for i, k in enumerate(range(-8, 7)):
        w[2, 2 + 7 * i + (1 if (2 + 7 * i) % 32 == 0 else 0)] = (k + 0.5) / 16
    w[2, 120] = -7.0 / 16

    w[3] = 0.0
    w[4, 77] = 1.5
    w[5, 5] = -2.0
    w[5, 100] = 1.0
    w[6, :64] = torch.randn(64, generator=g) * 1e-6
    w[6, 64:] = 0.0

    # row 0: near-ties that distinguish w / s from w * (1 / s) (int8 per-channel)
    amax = w[0].abs().max()
    s = amax / 127
    inv = 1.0 / s
    cols = [10, 20, 30]
    placed = 0
    for k in range(3, 200):
        if placed == len(cols):
            break
        c = ((k % 90) + 0.5) * s * (1 if k % 2 else -1)
        for direction in (1.0, -1.0):
            v = c.clone()
            for _ in range(3):
                v = torch.nextafter(v, torch.tensor(direction * 10.0))
                if v.abs() < amax and torch.round(v / s) != torch.round(v * inv):
                    w[0, cols[placed]] = v
                    placed += 1
                    break
            else:
                continue
            break
    assert placed == len(cols), placed
    assert torch.equal(w[0].abs().max(), amax)
    return w


def scales(w2d, bits, half=False):
    """Per-row symmetric scale of a 2-D tensor (rows = channels or groups)."""
    qmax = 2 ** (bits - 1) - 1
    amax = w2d.abs().amax(dim=1)
    s = amax / qmax
    if half:
        s = s * 0.5
    return torch.where(amax == 0, torch.ones_like(s), s).to(torch.float32)


def fake_quant(w, bits, group=None, half=False):
    """torch.fake_quantize_per_channel_affine, per channel (group=None) or per group."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    w2d = w if group is None else w.reshape(-1, group)
    s = scales(w2d.detach(), bits, half)
    zp = torch.zeros(s.shape, dtype=torch.int32)
    fq = torch.fake_quantize_per_channel_affine(w2d, s, zp, 0, qmin, qmax)
    q = torch.clamp(torch.round(w2d.detach() * (1.0 / s)[:, None]), qmin, qmax)
    shape = [OUT_DIM] if group is None else [OUT_DIM, IN_DIM // group]
    return fq.reshape(OUT_DIM, IN_DIM), s.reshape(shape), q.reshape(OUT_DIM, IN_DIM), s


VARIANTS = [
    ("int8_channel", 8, None, False),
    ("int4_channel", 4, None, False),
    ("int8_group32", 8, 32, False),
    ("int8_group64", 8, 64, False),
    ("int8_group128", 8, 128, False),
    ("int4_group32", 4, 32, False),
    ("int4_group64", 4, 64, False),
    ("int4_group128", 4, 128, False),
    ("int8_channel_halfscale", 8, None, True),
    ("int4_channel_halfscale", 4, None, True),
]


def build_fake_quant():
    w = make_w()
    u = torch.randn(OUT_DIM, IN_DIM, generator=torch.Generator().manual_seed(U_SEED))
    out = {"w": w.clone(), "u": u.clone()}
    for name, bits, group, half in VARIANTS:
        wv = w.clone().requires_grad_(True)
        fq, s, q, s_rows = fake_quant(wv, bits, group, half)
        (fq * u).sum().backward()
        grad = wv.grad.detach()
        fq = fq.detach()
        qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

        # independent formula: s * clamp(round(w * (1/s)), qmin, qmax), STE mask
        g = IN_DIM if group is None else group
        w2d = w.reshape(-1, g)
        r = torch.round(w2d * (1.0 / s_rows)[:, None])
        mine = (torch.clamp(r, qmin, qmax) * s_rows[:, None]).reshape(OUT_DIM, IN_DIM)
        mask = ((r >= qmin) & (r <= qmax)).reshape(OUT_DIM, IN_DIM)
        assert torch.equal(mine, fq), (name, (mine - fq).abs().max())
        assert torch.equal(grad, torch.where(mask, u, torch.zeros_like(u))), name
        # division instead of the reciprocal: report how many codes differ
        rdiv = torch.round(w2d / s_rows[:, None]).reshape(OUT_DIM, IN_DIM)
        ndiff = int((rdiv != r.reshape(OUT_DIM, IN_DIM)).sum())
        n_clamped = int((~mask).sum())
        print(f"{name:24s} clamped {n_clamped:3d}  |q|max {int(q.abs().max()):4d}  "
              f"q==qmin {int((q == qmin).sum()):2d}  codes differing if w/s were used: {ndiff}")
        if not half:
            assert n_clamped == 0 and int((q == qmin).sum()) == 0, name
        if name == "int8_channel":
            assert ndiff == 3, ndiff
        out[f"fq.{name}"] = fq
        out[f"grad.{name}"] = grad
        out[f"scale.{name}"] = s.contiguous()
        out[f"q.{name}"] = q.to(torch.int8)

    # half-scale edge checks (row 1 int8 / row 2 int4, see the docstring)
    q8 = out["q.int8_channel_halfscale"]
    g8 = out["grad.int8_channel_halfscale"]
    for col, qv, passes in [(40, 127, False), (43, 127, False), (46, -128, True),
                            (49, -128, True), (52, -128, False)]:
        assert int(q8[1, col]) == qv and bool(g8[1, col] == u[1, col]) == passes, (col, q8[1, col])
    q4 = out["q.int4_channel_halfscale"]
    assert int(q4[2, 0]) == 7 and float(out["grad.int4_channel_halfscale"][2, 0]) == 0.0

    # activations: dynamic per-token symmetric int8
    gx = torch.Generator().manual_seed(X_SEED)
    x = torch.randn(5, IN_DIM, generator=gx)
    x[1] = torch.randn(IN_DIM, generator=gx) * 3
    x[1, 7] = 20.0
    x[2] = 0.0
    x[3] = torch.randn(IN_DIM, generator=gx) * 0.05
    x[3, 0] = 127.0 / 128
    for i, k in enumerate([0, 1, 2, 3, -1, -2, -4, 50, -51, 125, -126]):
        x[3, 3 + 5 * i] = (k + 0.5) / 128
    x[4] = torch.randn(IN_DIM, generator=gx) * 0.01
    amax = x.abs().amax(dim=1)
    sx = torch.where(amax == 0, torch.ones_like(amax), amax / 127)
    fqx = torch.fake_quantize_per_channel_affine(x, sx, torch.zeros(5, dtype=torch.int32), 0, -128, 127)
    qx = torch.round(x * (1.0 / sx)[:, None])
    assert torch.equal(fqx, torch.clamp(qx, -128, 127) * sx[:, None])
    assert int(qx.abs().max()) <= 127
    out["x"] = x.clone()
    out["fq.act_int8_token"] = fqx
    out["scale.act_int8_token"] = sx

    if torchao is not None:
        fqa = IntxFakeQuantizer(IntxFakeQuantizeConfig(torch.int8, "per_token", is_symmetric=False))
        ya = fqa(x.clone())
        sa, za = fqa.scale.reshape(5).float(), fqa.zero_point.reshape(5).to(torch.int32)
        # independent formula
        mn = torch.clamp(x.amin(dim=1), max=0.0)
        mx = torch.clamp(x.amax(dim=1), min=0.0)
        s_ = torch.clamp((mx - mn) / 255.0, min=torch.finfo(torch.float32).smallest_normal)
        z_ = torch.clamp(-128 - torch.round(mn / s_), -128, 127)
        q_ = torch.clamp(torch.round(x * (1.0 / s_)[:, None]) + z_[:, None], -128, 127)
        assert torch.equal(s_, sa) and torch.equal(z_.to(torch.int32), za), (s_, sa, z_, za)
        assert torch.equal((q_ - z_[:, None]) * s_[:, None], ya), (((q_ - z_[:, None]) * s_[:, None]) - ya).abs().max()
        out["fq.act_torchao"] = ya.detach()
        out["scale.act_torchao"] = sa
        out["zp.act_torchao"] = za

        wq = IntxFakeQuantizer(IntxFakeQuantizeConfig(torch.int4, group_size=32, is_symmetric=True))
        yw = wq(w.clone()).detach()
        st = wq.scale.reshape(OUT_DIM, IN_DIM // 32).detach().float()
        # independent formula: s = amax / 7.5 (clamped at 2^-126), q = clamp(round(w * (1/s)), -8, 7)
        am = w.reshape(-1, 32).abs().amax(dim=1)
        s_ = torch.clamp(am / 7.5, min=torch.finfo(torch.float32).smallest_normal)
        assert torch.equal(s_.reshape(OUT_DIM, -1), st), (s_ - st.reshape(-1)).abs().max()
        r_ = torch.round(w.reshape(-1, 32) * (1.0 / s_)[:, None])
        assert torch.equal((torch.clamp(r_, -8, 7) * s_[:, None]).reshape(OUT_DIM, IN_DIM), yw)
        print(f"torchao int4 group32 (scale amax/7.5): {int((r_ > 7).sum())} entries clipped at +7, "
              f"{int((r_ == -8).sum())} at -8")
        out["fq.torchao_int4_group32"] = yw
        out["scale.torchao_int4_group32"] = st.contiguous()
    return out


# --------------------------------------------------------------------------- GGUF blocks

def make_x_blocks():
    rng = np.random.default_rng(G_SEED)
    x = rng.standard_normal((16, 32)).astype(np.float32)
    x[0] = 0.0
    x[1, 4] = -3.0
    x[2, 9] = 3.0
    x[2, 20] = -3.0
    x[3] = (rng.standard_normal(32) * 0.3).astype(np.float32)
    x[3, 0] = np.float32(127.0 / 64)
    for i, k in enumerate([0, 1, 2, -1, -2, -3, 5, -6, 62, -63, 125, -126]):
        x[3, 1 + 2 * i] = np.float32((k + 0.5) / 64)
    x[3, 30] = np.nextafter(np.float32(0.5), np.float32(0)) / np.float32(64)
    x[3, 31] = -x[3, 30]
    x[4] = (rng.standard_normal(32) * 0.1).astype(np.float32)
    x[4, 3] = -0.5
    x[4, 10] = 0.5
    for i, k in enumerate(range(-8, 7)):
        col = [0, 1, 2, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16][i]
        x[4, col] = np.float32((k + 0.5) / 16)
    x[5] = (rng.standard_normal(32) * 1e-3).astype(np.float32)
    x[6] = (rng.standard_normal(32) * 1e-8).astype(np.float32)
    x[7, 17] = 1000.0
    x[8] = (rng.standard_normal(32) * 100).astype(np.float32)
    return x


def roundf(v):
    """C roundf (half away from zero), exact for float32 input."""
    t = np.trunc(v)
    frac = np.abs(v - t)  # exact: v and t share the exponent range
    return (t + np.sign(v) * (frac >= np.float32(0.5))).astype(np.float32)


def spec_q8_0(x):
    out = np.zeros((x.shape[0], 34), np.uint8)
    qs = np.zeros(x.shape, np.int8)
    ds = np.zeros(x.shape[0], np.float32)
    for b, blk in enumerate(x):
        amax = np.float32(np.max(np.abs(blk)))
        d = np.float32(amax / np.float32(127))
        idv = np.float32(1) / d if d != 0 else np.float32(0)
        q = roundf((blk * idv).astype(np.float32))
        qs[b] = q.astype(np.int8)
        ds[b] = d
        out[b, :2] = np.frombuffer(np.float16(d).tobytes(), np.uint8)
        out[b, 2:] = qs[b].view(np.uint8)
    deq = np.array([np.float32(np.float16(ds[b])) * qs[b].astype(np.float32) for b in range(len(x))])
    return out, deq.astype(np.float32), qs, ds


def spec_q4_0(x):
    out = np.zeros((x.shape[0], 18), np.uint8)
    qs = np.zeros(x.shape, np.uint8)
    ds = np.zeros(x.shape[0], np.float32)
    for b, blk in enumerate(x):
        amax, mx = np.float32(0), np.float32(0)
        for v in blk:  # ggml: strictly greater -> first occurrence wins
            if amax < abs(v):
                amax, mx = abs(v), v
        d = np.float32(mx / np.float32(-8))
        idv = np.float32(1) / d if d != 0 else np.float32(0)
        prod = (blk * idv).astype(np.float32)
        s = (prod + np.float32(8.5)).astype(np.float32)
        q = np.minimum(15, np.trunc(s).astype(np.int8)).astype(np.uint8)
        qs[b] = q
        ds[b] = d
        out[b, :2] = np.frombuffer(np.float16(d).tobytes(), np.uint8)
        out[b, 2:] = q[:16] | (q[16:] << 4)
    deq = np.array([np.float32(np.float16(ds[b])) * (qs[b].astype(np.float32) - 8) for b in range(len(x))])
    return out, deq.astype(np.float32), qs, ds


def build_gguf_blocks():
    x = make_x_blocks()
    out = {"x": torch.from_numpy(x.copy())}
    ok = True
    for name, qt, spec in [("q8_0", GGMLQuantizationType.Q8_0, spec_q8_0),
                           ("q4_0", GGMLQuantizationType.Q4_0, spec_q4_0)]:
        by = gguf_quantize(x.reshape(16, 32), qt)
        deq = gguf_dequantize(by, qt).astype(np.float32).reshape(16, 32)
        mine_b, mine_deq, qs, ds = spec(x)
        if not np.array_equal(by, mine_b):
            ok = False
            bad = np.argwhere(by != mine_b)
            print(f"DISAGREE {name}: {len(bad)} bytes differ, first (block, byte): {bad[:10].tolist()}")
            for b, j in bad[:10]:
                print(f"  block {b} byte {j}: gguf {by[b, j]} spec {mine_b[b, j]}")
        if not np.array_equal(deq, mine_deq):
            ok = False
            print(f"DISAGREE {name} dequant: max diff {np.abs(deq - mine_deq).max()}")
        print(f"{name}: spec NumPy implementation vs gguf {gguf.__name__} bytes: "
              f"{'identical' if np.array_equal(by, mine_b) else 'DIFFERENT'}; dequant "
              f"{'identical' if np.array_equal(deq, mine_deq) else 'DIFFERENT'}")
        out[f"bytes.{name}"] = torch.from_numpy(np.ascontiguousarray(by))
        out[f"deq.{name}"] = torch.from_numpy(np.ascontiguousarray(deq))
        out[f"q.{name}"] = torch.from_numpy(qs.astype(np.int8 if name == "q8_0" else np.uint8))
        out[f"d.{name}"] = torch.from_numpy(ds)
    assert ok, "specs.md formulas disagree with the gguf package"

    # edge expectations (documented in the module docstring)
    q8, q4 = out["q.q8_0"].numpy(), out["q.q4_0"].numpy()
    assert q8[3, 1] == 1 and q8[3, 5] == 3 and q8[3, 7] == -1 and q8[3, 30] == 0, q8[3]
    assert q4[2, 9] == 0 and q4[2, 20] == 15, q4[2]
    assert out["d.q4_0"][4] == np.float32(0.0625) and q4[4, 3] == 0, (out["d.q4_0"][4], q4[4])
    assert q4[4, 8] == 8 and q4[4, 0] == 1 and q4[4, 10] == 15, q4[4]  # -0.5 -> 8 (0), -7.5 -> 1 (-7), +8 -> 15
    assert np.float16(out["d.q8_0"][6].item()) == 0 and np.all(out["deq.q8_0"][6].numpy() == 0)
    assert np.all(out["deq.q8_0"][0].numpy() == 0) and np.all(out["deq.q4_0"][0].numpy() == 0)
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    # one metadata key: safetensors writes a multi-key metadata map in hash order
    vers = f"torch={torch.__version__.split('+')[0]} gguf={_gguf_version()}"
    if torchao is not None:
        vers += f" torchao={torchao.__version__}"
    meta = {"generator": f"tests/reference/quant_reference.py {vers}"}
    fq = build_fake_quant()
    save_file({k: v.contiguous() for k, v in fq.items()}, os.path.join(OUT, "fake_quant.safetensors"), metadata=meta)
    gb = build_gguf_blocks()
    save_file({k: v.contiguous() for k, v in gb.items()}, os.path.join(OUT, "gguf_blocks.safetensors"), metadata=meta)
    print(f"wrote {OUT}/fake_quant.safetensors ({len(fq)} tensors), gguf_blocks.safetensors ({len(gb)} tensors)")


def _gguf_version():
    from importlib.metadata import version
    return version("gguf")


if __name__ == "__main__":
    main()
