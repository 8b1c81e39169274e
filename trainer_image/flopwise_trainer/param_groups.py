"""AdamW parameter groups, with muP's per-layer learning-rate multipliers.

Under muP with Adam, only the hidden matrices (both dimensions ∝ width) need their LR scaled, by
base_width/width; embeddings, the output layer (already scaled in the forward pass) and LayerNorm gains keep
the base LR. Weight decay applies to matrices, never to gains. Each group carries an ``lr_mult`` that the
training loop multiplies into the scheduled LR at every step.
"""

from __future__ import annotations

from torch import nn

from flopwise.contract import OptimizerSpec


def build_param_groups(model: nn.Module, opt: OptimizerSpec) -> list[dict]:
    """Groups for ``torch.optim.AdamW``: hidden (LR × 1/width_mult under muP), other matrices, and gains.

    Frozen parameters are left out; parameters named ``lora_*`` (LoRA adapters) form their own group at the
    base LR without weight decay, since the spec's LR is then the fine-tuning LR of the adapters."""
    width_mult = float(getattr(model, "width_mult", 1.0))
    hidden_matrices = getattr(model, "hidden_matrices", list)()
    hidden_ids = {id(m.weight) for m in hidden_matrices}
    groups: dict[str, dict] = {
        "hidden": {"params": [], "lr_mult": 1.0 / width_mult, "weight_decay": opt.weight_decay},
        "matrix": {"params": [], "lr_mult": 1.0, "weight_decay": opt.weight_decay},
        "vector": {"params": [], "lr_mult": 1.0, "weight_decay": 0.0},
        "lora": {"params": [], "lr_mult": 1.0, "weight_decay": 0.0},
    }
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "lora_" in name:
            key = "lora"
        elif id(p) in hidden_ids:
            key = "hidden"
        elif p.ndim >= 2:
            key = "matrix"
        else:
            key = "vector"
        groups[key]["params"].append(p)
    return [dict(g, name=k, lr=opt.lr * g["lr_mult"]) for k, g in groups.items() if g["params"]]
