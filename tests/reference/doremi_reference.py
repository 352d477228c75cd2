#!/usr/bin/env python3
"""Golden DoReMi domain-weight updates and loss weights (fixture for kiln's doremi.rs).

Regenerate (from the repository root; torch venv, generated with torch 2.15.0):

    $PY tests/reference/doremi_reference.py

writes tests/fixtures/doremi/updates.json:

  {"k": 3, "vocab_size": 50, "eta": 1.0, "eps": 0.001, "initial": [0.2, 0.3, 0.5],
   "seq_len": 5,
   "steps": [                      # one entry per optimizer step
     {"micro": [                   # its micro-batches, in order
        {"proxy": [B*T floats],    # proxy per-token loss (float32 values)
         "reference": [B*T],       # reference per-token loss (float32 values)
         "mask": [B*T 0/1],        # 1 = the token takes loss
         "domains": [B ints],      # domain id per row
         "loss": float}            # the proxy loss doremiv1 minimises on this micro-batch
      ],
      "train": [k], "avg": [k], "scores": [k]}   # the weights after the step's update
   ]}

This follows sangmichaelxie/doremi `doremi/trainer.py` (`DoReMiTrainer.update_domain_weights`
and `training_step`, `doremi_optimizer = "doremiv1"`), written out here:
  * buffers start as train = avg = initial / sum(initial), perdomain_scores = ones * ln(vocab),
    update_counter = 1 (doremi/train.py);
  * once per optimizer step (when the step's last micro-batch arrives), over the concatenated
    micro-batches: per domain, clip(excess, min=0) averaged over its masked tokens, where
    excess = proxy - reference per token (float32); a domain with no row keeps its last score;
  * log w + eta * scores -> softmax -> (1 - eps) w + eps / k; counter += 1;
    avg = (avg * (counter - 1) + w) / counter;
  * each micro-batch's loss: sum(proxy * w[domain] * mask) / sum(w[domain] * mask), with w
    read after the update (so earlier micro-batches of a step use the previous weights).

Deviation, on purpose: the buffers are float64 here (the original's are float32), so the
fixture pins the arithmetic rather than float32 rounding; the per-token excess is still a
float32 difference, as in the original. Steps 3 and 5 leave out domain 2 (its score carries
over); steps 2 and 4 accumulate two micro-batches.
"""

import json
import math
import os

import torch

K, VOCAB, ETA, EPS = 3, 50, 1.0, 1e-3
INITIAL = [0.2, 0.3, 0.5]
B, T = 4, 5
MICRO = [1, 2, 1, 2, 1, 1]


def main():
    gen = torch.Generator().manual_seed(0)
    total = sum(INITIAL)
    train = torch.tensor([w / total for w in INITIAL], dtype=torch.float64)
    avg = train.clone()
    scores = torch.ones(K, dtype=torch.float64) * math.log(VOCAB)
    counter = 1
    steps = []
    for step, n_micro in enumerate(MICRO):
        micro = []
        for _ in range(n_micro):
            proxy = (torch.rand(B, T, generator=gen) * 4.0).float()
            reference = (torch.rand(B, T, generator=gen) * 3.0).float()
            mask = (torch.rand(B, T, generator=gen) > 0.2).float()
            high = 2 if step in (3, 5) else K
            domains = torch.randint(0, high, (B,), generator=gen)
            micro.append((proxy, reference, mask, domains))
        out_micro = []
        for i, (proxy, reference, mask, domains) in enumerate(micro):
            if i == n_micro - 1:
                excess = torch.cat([(p - r) for p, r, _, _ in micro], 0)  # float32
                masks = torch.cat([m for _, _, m, _ in micro], 0).bool()
                ids = torch.cat([d for _, _, _, d in micro], 0)
                new_scores = []
                for d in range(K):
                    rows = ids == d
                    if rows.sum() > 0:
                        vals = torch.clip(excess[rows][masks[rows]], min=0).double()
                        new_scores.append(vals.mean())
                    else:
                        new_scores.append(scores[d])
                scores = torch.stack(new_scores).double()
                logw = torch.log(train) + ETA * scores
                w = torch.softmax(logw, dim=0)
                train = (1 - EPS) * w + EPS / K
                counter += 1
                avg = (avg * (counter - 1) + train) / counter
            cur = train[domains].unsqueeze(-1).expand(B, T) * mask.double()
            loss = (proxy.double() * cur).sum() / cur.sum()
            out_micro.append(
                {
                    "proxy": proxy.flatten().tolist(),
                    "reference": reference.flatten().tolist(),
                    "mask": [int(v) for v in mask.flatten().tolist()],
                    "domains": domains.tolist(),
                    "loss": loss.item(),
                }
            )
        steps.append(
            {
                "micro": out_micro,
                "train": train.tolist(),
                "avg": avg.tolist(),
                "scores": scores.tolist(),
            }
        )
    out = {
        "k": K,
        "vocab_size": VOCAB,
        "eta": ETA,
        "eps": EPS,
        "initial": INITIAL,
        "seq_len": T,
        "steps": steps,
    }
    path = os.path.join("tests", "fixtures", "doremi", "updates.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {path}: {len(steps)} steps, final avg {avg.tolist()}")


if __name__ == "__main__":
    main()
