"""LoRA (Hu et al. 2021): frozen base weights plus a trainable low-rank update B·A on each block linear.

B starts at zero so the adapted model starts exactly at the base model. Adapter parameters are named
``lora_a``/``lora_b`` so ``param_groups`` and Fast Forward can find them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.scaling = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scaling


def apply_lora(model: nn.Module, rank: int, alpha: float) -> list[LoRALinear]:
    """Freeze every parameter of ``model`` and wrap the attention and MLP linears of each block."""
    for p in model.parameters():
        p.requires_grad_(False)
    adapters = []
    for block in model.blocks:
        for owner, attr in ((block.attn, "qkv"), (block.attn, "proj"), (block.mlp, "fc"), (block.mlp, "proj")):
            adapter = LoRALinear(getattr(owner, attr), rank, alpha)
            setattr(owner, attr, adapter)
            adapters.append(adapter)
    return adapters


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for name, p in model.named_parameters() if "lora_" in name]


def lora_param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in lora_parameters(model))
