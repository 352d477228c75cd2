#!/usr/bin/env python3
"""Golden LoRA trajectories from Hugging Face ``peft`` (parity fixtures for kiln's LoRA).

Regenerate (from the repository root; the venv needs
``pip install torch transformers==5.23.0 peft safetensors``, generated with
torch 2.15.0, transformers 5.23.0, peft 0.21.2):

    $PY tests/reference/lora_peft.py

writes three cases, tests/fixtures/lora/{llama,rslora,mamba}/, each holding:

  config.json               the HF model config (``config.save_pretrained``).
  model.safetensors         the BASE model weights, HF names (``model.state_dict()``
                            before peft wraps it); the tied ``lm_head.weight`` is not
                            stored (it is the embedding), as in the other fixtures.
  adapter_config.json       peft's, as ``PeftModel.save_pretrained`` writes it, except that
                            target_modules is sorted (peft writes list(set), in hash order).
  adapter_init.safetensors  the LoRA tensors before step 1, and
  adapter_final.safetensors the LoRA tensors after the 10 optimizer steps, both with
                            peft's saved names (``get_peft_model_state_dict``, i.e. the
                            names in save_pretrained's adapter_model.safetensors):
                              base_model.model.<HF module path>.lora_A.weight  [r, in]
                              base_model.model.<HF module path>.lora_B.weight  [out, r]
                            e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
                            and  base_model.model.backbone.layers.0.mixer.in_proj.lora_B.weight.
  golden.json               {
                              "case": "llama" | "rslora" | "mamba",
                              "peft_version": "0.21.2",
                              "r": 4, "alpha": 8.0, "rslora": bool,
                              "scale": alpha / r  (alpha / sqrt(r) when rslora),
                              "targets": [module names, as in target_modules],
                              "lr": 0.01, "betas": [0.9, 0.95], "eps": 1e-8,
                              "weight_decay": 0.1, "clip": 1.0, "steps": 10,
                              "inputs":      [10][B][T] int token ids (step-major),
                              "targets_ids": [10][B][T] int, -100 = ignored position,
                              "losses":      [10] float, the loss at each step BEFORE its update,
                              "final_logits_first_batch": [B][T][V] float, logits of the
                                  trained (unmerged) model on inputs[0],
                              "merge_max_abs_diff": float, |merged - unmerged| logits on
                                  inputs[0] after training (merge_and_unload)
                            }
                            B = 2, T = 8, V = 48 in all three cases.

Gotcha: because a fixture folder holds adapter_config.json next to config.json,
transformers' ``from_pretrained(folder)`` treats it as an adapter repo and fails
looking for adapter_model.safetensors; to load the base in Python, copy config.json
and model.safetensors to another folder (the script's own reload check runs before
adapter_config.json is written).

Cases:
  llama   transformers.LlamaForCausalLM as tests/reference/optim_model_reference.py
          (vocab 48, hidden 16, 2 layers, 2 heads, 1 kv head, SwiGLU 24, tied
          embeddings, norms 1 + 0.1 randn), model seed 21.
          LoraConfig(r=4, lora_alpha=8, lora_dropout=0, bias="none",
          init_lora_weights=True, target_modules=q,k,v,o,gate,up,down _proj).
          Masked loss: targets[:, :, 0:4] = -100 (the first 4 positions of every row).
  rslora  the same base model and batches, use_rslora=True (scale 8 / sqrt(4) = 4),
          target_modules=["q_proj", "v_proj"], no masking.
  mamba   transformers.MambaForCausalLM, slow path (use_mambapy=False, CPU):
          vocab 48, hidden 16, 2 layers, state 4, expand 2 (d_inner 32), conv 4,
          dt_rank "auto" = 1, tied embeddings, norms and D = 1 + 0.1 randn, seed 31.
          target_modules=["in_proj", "x_proj"], r=4, alpha=8, no masking.
          NOT dt_proj: transformers 5.23's MambaMixer computes
          `self.dt_proj.weight @ time_step` (and its training fast path passes
          dt_proj.weight / x_proj.weight / out_proj.weight to mamba_inner_fn), so
          a peft LoRA on dt_proj never reaches the output; its adapters would get
          no gradient here. Kiln's dt_proj adapters are real, but have no HF reader.
          NOT out_proj: peft (tuners_utils._check_lora_target_modules_mamba) raises
          ValueError for LoRA on "out_proj" or "conv1d" of any model_type in
          {mamba, mamba2, falcon_mamba, falcon_h1, nemotron_h}, in get_peft_model
          and in PeftModel.from_pretrained alike, so an adapter that targets Mamba's
          out_proj cannot be loaded by peft at all. dt_proj is Linear(1 -> 32) with a bias: its LoRA A is [4, 1],
          B [32, 4] (r > in is allowed by peft); the dt_proj bias stays a frozen base
          weight (bias="none") and is stored in model.safetensors only.

LoRA init: peft's default (A kaiming-uniform with a=sqrt(5), B zero), under
torch.manual_seed(model seed + 1). Then every lora_B is OVERWRITTEN with
0.05 * randn (torch.manual_seed(model seed + 2), in named_parameters order) so that
step 1's gradient of A is non-zero; adapter_init.safetensors holds these values,
so kiln loads them rather than re-deriving peft's init.

Forward: y = x W^T (+ b) + scale * (x A^T) B^T for every targeted Linear.
Loss: F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-100)
(mean over the non-ignored positions; no shift: the batches already are inputs/targets).
Training: only the LoRA tensors are trainable (peft freezes the base). 10 steps:
  loss -> backward -> clip_grad_norm_(lora params, 1.0) ->
  torch.optim.AdamW(lora params, lr=1e-2, betas=(0.9, 0.95), eps=1e-8,
                    weight_decay=0.1, foreach=False).step() -> zero_grad,
constant lr, weight decay on every LoRA tensor (A and B alike).

Self-checks on every generation (assert): an independent plain-torch
x W^T + scale (x A^T) B^T equals a peft layer's output (llama q_proj, rslora v_proj,
mamba dt_proj with its bias); merge_and_unload() logits equal the unmerged logits
within 1e-5; the get_peft_model_state_dict names equal those of save_pretrained's
adapter_model.safetensors; from_pretrained of the saved base reproduces its logits.
"""

import copy
import json
import math
import os
import shutil
import tempfile

import peft
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM, MambaConfig, MambaForCausalLM
from transformers.utils import logging as hf_logging

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "lora")
STEPS, B, T, V = 10, 2, 8, 48
R, ALPHA = 4, 8.0
LR, BETAS, EPS, WD, CLIP = 1e-2, (0.9, 0.95), 1e-8, 0.1, 1.0
LLAMA_SEED, MAMBA_SEED, DATA_SEED = 21, 31, 41
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_llama():
    cfg = LlamaConfig(
        vocab_size=V, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=T,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
        attention_bias=False, mlp_bias=False, hidden_act="silu",
    )
    torch.manual_seed(LLAMA_SEED)
    model = LlamaForCausalLM(cfg).float()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.add_(0.1 * torch.randn_like(p))
    return cfg, model, LLAMA_SEED


def build_mamba():
    cfg = MambaConfig(
        vocab_size=V, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2,
        conv_kernel=4, layer_norm_epsilon=1e-5, use_bias=False, use_conv_bias=True,
        tie_word_embeddings=True, use_mambapy=False, use_associative_scan=False,
        pad_token_id=0, bos_token_id=0, eos_token_id=0,
    )
    torch.manual_seed(MAMBA_SEED)
    model = MambaForCausalLM(cfg).float()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight") or n.endswith("norm_f.weight") or n.endswith("mixer.D"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape))
    return cfg, model, MAMBA_SEED


def batches(mask_first):
    g = torch.Generator().manual_seed(DATA_SEED)
    xs = torch.randint(0, V, (STEPS, B, T), generator=g)
    ys = torch.randint(0, V, (STEPS, B, T), generator=g)
    if mask_first:
        ys[:, :, :mask_first] = -100
    return xs, ys


def logits_of(model, x):
    return model(input_ids=x, use_cache=False).logits


def loss_of(logits, y):
    return F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), ignore_index=-100)


def copy_adapter_config(src, dst):
    """Copy peft's adapter_config.json with target_modules sorted.

    peft keeps target_modules as a Python set and writes list(set), whose order
    depends on PYTHONHASHSEED; sorting it (peft reads it back as a set) makes the
    fixture byte-reproducible. Everything else is peft's bytes: the file is
    json.dumps(d, indent=2, sort_keys=True) with no trailing newline, which is
    checked before re-dumping.
    """
    with open(src) as f:
        raw = f.read()
    d = json.loads(raw)
    assert json.dumps(d, indent=2, sort_keys=True) == raw, "peft changed its adapter_config format"
    d["target_modules"] = sorted(d["target_modules"])
    with open(dst, "w") as f:
        f.write(json.dumps(d, indent=2, sort_keys=True))


def check_layer(layer, scale, tag):
    """Independent x W^T (+ b) + scale (x A^T) B^T vs the peft LoraLayer."""
    w = layer.base_layer.weight.detach()
    b = layer.base_layer.bias
    a_ = layer.lora_A["default"].weight.detach()
    b_ = layer.lora_B["default"].weight.detach()
    assert abs(layer.scaling["default"] - scale) < 1e-12, (layer.scaling, scale)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 5, w.shape[1], generator=g)
    with torch.no_grad():
        y = layer(x)
    ref = x @ w.T + scale * (x @ a_.T) @ b_.T
    if b is not None:
        ref = ref + b.detach()
    d = (y - ref).abs().max().item()
    assert d < 1e-6, (tag, d)
    return d


def run_case(name, build, targets, rslora, mask_first, check_module):
    out = os.path.join(OUT, name)
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    cfg, model, seed = build()
    model.eval()  # no dropout anywhere (attention_dropout 0, lora_dropout 0)
    xs, ys = batches(mask_first)

    # Base model: HF names, tied lm_head stored once (as the embedding).
    base_state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file({k: v for k, v in base_state.items() if k != "lm_head.weight"},
              os.path.join(out, "model.safetensors"))
    cfg.save_pretrained(out)
    with torch.no_grad():
        base_logits = logits_of(model, xs[0])
    reloaded = type(model).from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        assert (logits_of(reloaded, xs[0]) - base_logits).abs().max().item() == 0.0, "reload differs"

    lcfg = LoraConfig(
        r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=targets, bias="none",
        init_lora_weights=True, use_rslora=rslora, task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed + 1)
    pm = get_peft_model(model, lcfg)
    torch.manual_seed(seed + 2)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn(p.shape))
    scale = ALPHA / math.sqrt(R) if rslora else ALPHA / R

    trainable = [(n, p) for n, p in pm.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n, _ in trainable), \
        [n for n, _ in trainable]
    params = [p for _, p in trainable]

    # Names: get_peft_model_state_dict == save_pretrained's adapter_model.safetensors.
    init = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(pm).items()}
    assert len(init) == len(trainable), (len(init), len(trainable))
    with tempfile.TemporaryDirectory() as tmp:
        pm.save_pretrained(tmp)
        saved = load_file(os.path.join(tmp, "adapter_model.safetensors"))
        assert set(saved) == set(init), sorted(set(saved) ^ set(init))
        assert all(torch.equal(saved[k], init[k]) for k in init)
        copy_adapter_config(os.path.join(tmp, "adapter_config.json"), os.path.join(out, "adapter_config.json"))
    save_file(init, os.path.join(out, "adapter_init.safetensors"))

    layer = pm.get_submodule(check_module)
    layer_diff = check_layer(layer, scale, name)

    opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, foreach=False)
    losses = []
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        loss = loss_of(logits_of(pm, xs[step]), ys[step])
        losses.append(float(loss.detach()))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
    opt.zero_grad(set_to_none=True)

    final = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(pm).items()}
    assert set(final) == set(init)
    save_file(final, os.path.join(out, "adapter_final.safetensors"))
    check_layer(layer, scale, name + " final")

    with torch.no_grad():
        unmerged = logits_of(pm, xs[0])
        merged_model = copy.deepcopy(pm).merge_and_unload()
        merged = logits_of(merged_model, xs[0])
    merge_diff = (merged - unmerged).abs().max().item()
    assert merge_diff < 1e-5, (name, merge_diff)
    assert type(merged_model) is type(reloaded)

    golden = {
        "case": name,
        "peft_version": peft.__version__,
        "r": R, "alpha": ALPHA, "rslora": rslora, "scale": scale,
        "targets": targets,
        "lr": LR, "betas": list(BETAS), "eps": EPS, "weight_decay": WD, "clip": CLIP,
        "steps": STEPS,
        "inputs": xs.tolist(),
        "targets_ids": ys.tolist(),
        "losses": losses,
        "final_logits_first_batch": unmerged.tolist(),
        "merge_max_abs_diff": merge_diff,
    }
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(golden, f)
        f.write("\n")
    for f in os.listdir(out):
        os.chmod(os.path.join(out, f), 0o644)
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"{name}: scale {scale}, {len(init)} lora tensors, layer check {layer_diff:.2e}, "
          f"merge max diff {merge_diff:.3e}, {size} bytes")
    print(f"  losses {[round(x, 5) for x in losses]}")
    print(f"  e.g. {sorted(init)[0]} {list(init[sorted(init)[0]].shape)}")


def main():
    hf_logging.disable_progress_bar()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    run_case("llama", build_llama, LLAMA_TARGETS, False, 4, "base_model.model.model.layers.0.self_attn.q_proj")
    run_case("rslora", build_llama, ["q_proj", "v_proj"], True, 0, "base_model.model.model.layers.1.self_attn.v_proj")
    # peft 0.21 refuses LoRA on Mamba's out_proj / conv1d, and transformers'
    # MambaMixer multiplies by dt_proj.weight directly, so a dt_proj LoRA is
    # silently ignored there (see the docstring): only in_proj and x_proj.
    run_case("mamba", build_mamba, ["in_proj", "x_proj"], False, 0,
             "base_model.model.backbone.layers.0.mixer.x_proj")


if __name__ == "__main__":
    main()
