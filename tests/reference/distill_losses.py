#!/usr/bin/env python3
"""Golden knowledge-distillation losses and their gradients (fixtures for kiln's distill losses).

Regenerate (from the repository root; the venv needs ``pip install torch safetensors``,
generated with torch 2.15.0; ``trl`` is optional, see below):

    $PY tests/reference/distill_losses.py

writes tests/fixtures/distill/losses.safetensors, all float32 unless noted:

  student                [N, V] = [12, 37]  student logits, torch.manual_seed(0); randn * 3
  teacher                [12, 37]           teacher logits, randn * 3 (same generator, drawn
                                            after student)
  labels                 [12] int64         random ids in 0..37 (same generator), then set to
                                            -100 at positions 2, 5, 9 (masked out)
  value.<NAME>_t1        [1]   the loss at temperature T = 1.0
  value.<NAME>_t2        [1]   the loss at temperature T = 2.0
  grad.<NAME>_t1         [12, 37]  d value / d student at T = 1.0
  grad.<NAME>_t2         [12, 37]  d value / d student at T = 2.0

  for NAME in forward_kl, reverse_kl, jsd, jsd_b01, skew_kl (20 value/grad keys in all).
  The teacher gets no gradient (it is detached). Every value and gradient is computed by
  torch autograd in float64 from the float32 logits (upcast), then cast to float32.

Definitions. Per position i, with temperature T:
  log p_T = log_softmax(teacher_i / T),  log p_S = log_softmax(student_i / T)
  (sums over the vocabulary v). The loss is the MEAN over the unmasked positions
  (labels != -100; here 9 of 12) of the per-position quantity L_i; masked positions
  contribute nothing and their gradient rows are exactly zero.

  forward_kl  L_i = T^2 * sum_v p_T (log p_T - log p_S)
              (Hinton et al.; torchtune ForwardKLLoss at T = 1)
  reverse_kl  L_i = T^2 * sum_v p_S (log p_S - log p_T)            (MiniLLM, token level)
  jsd         TRL GKD's generalized JSD with beta = 0.5:
                log m = logsumexp([log p_S + log(1 - beta), log p_T + log(beta)])
                L_i = T^2 * ( beta * sum_v p_T (log p_T - log m)
                            + (1 - beta) * sum_v p_S (log p_S - log m) )
  jsd_b01     the same with beta = 0.1
  skew_kl     DistiLLM skew KL with alpha = 0.1:
                log q = logsumexp([log p_T + log(alpha), log p_S + log(1 - alpha)])
                      = log(alpha * p_T + (1 - alpha) * p_S)
                L_i = T^2 * sum_v p_T (log p_T - log q)

  T^2: TRL's ``GKDTrainer.generalized_jsd_loss`` divides the logits by the temperature but
  does NOT multiply by T^2 (nor does DistiLLM's skew KL). Kiln applies T^2 to EVERY loss
  (Hinton's convention) so that the gradient scale w.r.t. the logits stays comparable across
  temperatures; the fixture follows kiln, i.e. value.jsd_t2 = 4 * TRL's value at T = 2.

Self-checks (asserts, in float64):
  * forward_kl at T = 1 equals
    F.kl_div(log_softmax(student), log_softmax(teacher), log_target=True,
             reduction="none").sum(-1) averaged over the unmasked positions;
  * jsd / jsd_b01 equal TRL's generalized_jsd_loss (kl_div of the mixture against the
    teacher and the student, labels mask, "batchmean" over the unmasked tokens) times T^2,
    written out below; when ``trl`` imports, also against
    ``trl.GKDTrainer.generalized_jsd_loss`` itself (it was not installed when generated);
  * masked rows of every gradient are zero.
"""

import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

N, V = 12, 37
MASKED = (2, 5, 9)
TEMPS = {"t1": 1.0, "t2": 2.0}
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "distill")


def per_position(name, s, t, temp):
    """L_i for every position, [N] float64 (T^2 included)."""
    ls = F.log_softmax(s / temp, dim=-1)
    lt = F.log_softmax(t / temp, dim=-1)
    ps, pt = ls.exp(), lt.exp()
    if name == "forward_kl":
        v = (pt * (lt - ls)).sum(-1)
    elif name == "reverse_kl":
        v = (ps * (ls - lt)).sum(-1)
    elif name in ("jsd", "jsd_b01"):
        beta = 0.5 if name == "jsd" else 0.1
        lm = torch.logsumexp(torch.stack([ls + math.log(1 - beta), lt + math.log(beta)]), dim=0)
        v = beta * (pt * (lt - lm)).sum(-1) + (1 - beta) * (ps * (ls - lm)).sum(-1)
    elif name == "skew_kl":
        alpha = 0.1
        lq = torch.logsumexp(torch.stack([lt + math.log(alpha), ls + math.log(1 - alpha)]), dim=0)
        v = (pt * (lt - lq)).sum(-1)
    else:
        raise ValueError(name)
    return temp * temp * v


def loss(name, s, t, labels, temp):
    mask = labels != -100
    return per_position(name, s, t, temp)[mask].mean()


def trl_generalized_jsd(student_logits, teacher_logits, labels, beta, temperature):
    """TRL GKDTrainer.generalized_jsd_loss (reduction="batchmean"), written out."""
    student_logits = student_logits / temperature
    teacher_logits = teacher_logits / temperature
    student_log_probs = F.log_softmax(student_logits, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits, dim=-1)
    beta_t = torch.tensor(beta, dtype=student_log_probs.dtype)
    mixture_log_probs = torch.logsumexp(
        torch.stack([student_log_probs + torch.log(1 - beta_t), teacher_log_probs + torch.log(beta_t)]),
        dim=0,
    )
    kl_teacher = F.kl_div(mixture_log_probs, teacher_log_probs, reduction="none", log_target=True)
    kl_student = F.kl_div(mixture_log_probs, student_log_probs, reduction="none", log_target=True)
    jsd = beta_t * kl_teacher + (1 - beta_t) * kl_student
    mask = labels != -100
    jsd = jsd[mask]
    return jsd.sum() / mask.sum()


def main():
    torch.manual_seed(0)
    student = (torch.randn(N, V) * 3).float()
    teacher = (torch.randn(N, V) * 3).float()
    labels = torch.randint(0, V, (N,), dtype=torch.int64)
    labels[list(MASKED)] = -100
    mask = labels != -100

    out = {"student": student, "teacher": teacher, "labels": labels}
    t64 = teacher.double()
    for name in ("forward_kl", "reverse_kl", "jsd", "jsd_b01", "skew_kl"):
        for suffix, temp in TEMPS.items():
            s64 = student.double().requires_grad_(True)
            value = loss(name, s64, t64, labels, temp)
            (grad,) = torch.autograd.grad(value, s64)
            assert torch.all(grad[~mask] == 0), name
            assert torch.isfinite(grad).all() and torch.isfinite(value), name
            out[f"value.{name}_{suffix}"] = value.detach().reshape(1).float()
            out[f"grad.{name}_{suffix}"] = grad.float()

            with torch.no_grad():
                if name == "forward_kl" and temp == 1.0:
                    ref = F.kl_div(F.log_softmax(s64, -1), F.log_softmax(t64, -1),
                                   log_target=True, reduction="none").sum(-1)[mask].mean()
                    assert torch.allclose(value, ref, rtol=1e-12, atol=1e-14), (value, ref)
                if name in ("jsd", "jsd_b01"):
                    beta = 0.5 if name == "jsd" else 0.1
                    ref = temp * temp * trl_generalized_jsd(s64, t64, labels, beta, temp)
                    assert torch.allclose(value, ref, rtol=1e-12, atol=1e-14), (name, value, ref)
                    try:
                        from trl import GKDTrainer
                    except Exception:
                        GKDTrainer = None
                    if GKDTrainer is not None:
                        trl_v = GKDTrainer.generalized_jsd_loss(
                            s64, t64, labels=labels, beta=beta, temperature=temp,
                            reduction="batchmean")
                        assert torch.allclose(value, temp * temp * trl_v, rtol=1e-10), (name, value, trl_v)
            print(f"{name:>10} T={temp}: value {value.item():.8f}  |grad|max {grad.abs().max().item():.3e}")

    # Sanity: JSD with beta in (0, 1) is bounded by T^2 * H(beta) (binary entropy).
    for suffix, temp in TEMPS.items():
        for name, beta in (("jsd", 0.5), ("jsd_b01", 0.1)):
            bound = temp * temp * -(beta * math.log(beta) + (1 - beta) * math.log(1 - beta))
            assert out[f"value.{name}_{suffix}"].item() <= bound + 1e-6

    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "losses.safetensors")
    save_file({k: v.contiguous() for k, v in sorted(out.items())}, path)
    print("wrote", os.path.normpath(path), len(out), "tensors")


if __name__ == "__main__":
    main()
