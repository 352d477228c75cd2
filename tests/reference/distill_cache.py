#!/usr/bin/env python3
"""Golden sparse (offline-cache) forward-KL losses and gradients, for kiln's
`[distill] cache` path (tests/distill_cache.rs).

Regenerate (from the repository root; the venv needs torch and safetensors,
generated with torch 2.15.0):

    $PY tests/reference/distill_cache.py

reads the student/teacher logits and the mask of tests/fixtures/distill/losses.safetensors
(N, V = 12, 37; labels == -100 masked) and writes tests/fixtures/distill/cache.safetensors:

  topk_ids.t{1,2}      [12, 5] int64  the teacher's 5 most likely ids per position at
                                      temperature T (log_softmax(teacher / T), ties broken
                                      by the lower id), most likely first
  topk_logp.t{1,2}     [12, 5]        their log-probabilities log_softmax(teacher / T)
  value.topk_t{1,2}    [1]            the cache's top-k forward KL
  grad.topk_t{1,2}     [12, 37]       its gradient w.r.t. the student logits

Definition (what a student reads from a top-k cache): per position i the k stored
log-probabilities are renormalised over the k ids, log q_j = logp_j - logsumexp(logp),
and with log p_S = log_softmax(student_i / T),

    L_i = T^2 * sum_j q_j (log q_j - log p_S[id_j]),

the mean over the unmasked positions. Computed by torch autograd in float64 from the
float32 logits, stored as float32. Self-check: with k = V the same formula equals the
dense forward KL of distill_losses.py (torch.nn.functional.kl_div) to 1e-12.
"""

import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

K = 5
TEMPS = {"t1": 1.0, "t2": 2.0}
DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "distill")


def topk(teacher, temp, k):
    logp = F.log_softmax(teacher / temp, dim=-1)
    n, v = logp.shape
    ids = torch.empty(n, k, dtype=torch.int64)
    for i in range(n):
        order = sorted(range(v), key=lambda j: (-logp[i, j].item(), j))[:k]
        ids[i] = torch.tensor(order)
    return ids, torch.gather(logp, 1, ids)


def sparse_kl(student, ids, logp, mask, temp):
    lq = logp - torch.logsumexp(logp, dim=-1, keepdim=True)
    ls = F.log_softmax(student / temp, dim=-1)
    per = (lq.exp() * (lq - torch.gather(ls, 1, ids))).sum(-1) * temp * temp
    return per[mask].mean()


def main():
    src = load_file(os.path.join(DIR, "losses.safetensors"))
    student, teacher, labels = src["student"], src["teacher"], src["labels"]
    mask = labels != -100
    t64 = teacher.double()
    out = {}
    for suffix, temp in TEMPS.items():
        ids, logp = topk(t64, temp, K)
        s64 = student.double().requires_grad_(True)
        value = sparse_kl(s64, ids, logp, mask, temp)
        (grad,) = torch.autograd.grad(value, s64)
        out[f"topk_ids.{suffix}"] = ids
        out[f"topk_logp.{suffix}"] = logp.float()
        out[f"value.topk_{suffix}"] = value.detach().reshape(1).float()
        out[f"grad.topk_{suffix}"] = grad.float()
        # k = V: the dense forward KL.
        all_ids, all_logp = topk(t64, temp, t64.shape[1])
        dense = sparse_kl(student.double(), all_ids, all_logp, mask, temp)
        ref = temp * temp * F.kl_div(F.log_softmax(student.double() / temp, -1),
                                     F.log_softmax(t64 / temp, -1), log_target=True,
                                     reduction="none").sum(-1)[mask].mean()
        assert torch.allclose(dense, ref, rtol=1e-12), (dense, ref)
        print(f"top-{K} T={temp}: value {value.item():.8f} (dense {ref.item():.8f})")
    path = os.path.join(DIR, "cache.safetensors")
    save_file({k: v.contiguous() for k, v in sorted(out.items())}, path)
    print("wrote", os.path.normpath(path), len(out), "tensors")


if __name__ == "__main__":
    main()
