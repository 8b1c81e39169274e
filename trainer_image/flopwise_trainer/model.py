"""The decoder-only, pre-norm transformer built from a ``ModelShape``, with muP or standard parameterisation.

The module tree is chosen so that ``sum(p.numel())`` equals ``ModelShape.param_count()`` exactly: bias-free
linears, weight-only LayerNorms, no parameters in RoPE. muP (Yang et al. 2022) touches three places here —
hidden-matrix init ∝ 1/sqrt(fan_in) relative to the base width, logits × output_mult·base_width/width, and
attention scaled by 1/d_head; its fourth part, the per-layer Adam LR, lives in ``param_groups``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flopwise.contract import ModelShape, MupSpec


class Rotary(nn.Module):
    """Rotary position embedding (no parameters; cos/sin tables are non-persistent buffers)."""

    def __init__(self, head_dim: int, seq_len: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", angles.cos()[None, None], persistent=False)
        self.register_buffer("sin", angles.sin()[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, heads, time, head_dim)
        t = x.shape[-2]
        cos, sin = self.cos[:, :, :t].to(x.dtype), self.sin[:, :, :t].to(x.dtype)
        x1, x2 = x[..., ::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, shape: ModelShape, scale: float):
        super().__init__()
        self.n_head, self.head_dim, self.scale = shape.n_head, shape.head_dim, scale
        self.qkv = nn.Linear(shape.d_model, 3 * shape.d_model, bias=False)
        self.proj = nn.Linear(shape.d_model, shape.d_model, bias=False)
        self.rotary = Rotary(shape.head_dim, shape.seq_len) if shape.positional == "rope" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        # SDPA picks Flash / memory-efficient kernels on GPU; `scale` carries muP's 1/d_head.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.fc = nn.Linear(shape.d_model, shape.ffn_width, bias=False)
        self.proj = nn.Linear(shape.ffn_width, shape.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, shape: ModelShape, attn_scale: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(shape.d_model, bias=False)
        self.attn = Attention(shape, attn_scale)
        self.ln2 = nn.LayerNorm(shape.d_model, bias=False)
        self.mlp = MLP(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """GPT-style decoder. ``forward(idx, targets)`` returns (logits, mean cross-entropy or None)."""

    def __init__(self, shape: ModelShape, mup: MupSpec | None = None):
        super().__init__()
        mup = mup or MupSpec()
        self.shape, self.mup = shape, mup
        self.is_mup = mup.parameterization == "mup"
        self.width_mult = shape.d_model / mup.base_width if self.is_mup else 1.0
        attn_scale = 1.0 / shape.head_dim if self.is_mup else 1.0 / math.sqrt(shape.head_dim)
        self.output_scale = mup.output_mult / self.width_mult if self.is_mup else 1.0

        self.wte = nn.Embedding(shape.vocab_size, shape.d_model)
        self.wpe = nn.Embedding(shape.seq_len, shape.d_model) if shape.positional == "learned" else None
        self.blocks = nn.ModuleList(Block(shape, attn_scale) for _ in range(shape.n_layer))
        self.ln_f = nn.LayerNorm(shape.d_model, bias=False)
        self.lm_head = None if shape.tied_embeddings else nn.Linear(shape.d_model, shape.vocab_size, bias=False)
        self.reset_parameters()

    def hidden_matrices(self) -> list[nn.Linear]:
        """The matrices whose both dimensions grow with width: muP scales their init and Adam LR."""
        return [m for block in self.blocks for m in (block.attn.qkv, block.attn.proj, block.mlp.fc, block.mlp.proj)]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        std = self.mup.init_std
        nn.init.normal_(self.wte.weight, std=std)
        if self.wpe is not None:
            nn.init.normal_(self.wpe.weight, std=std)
        if self.lm_head is not None:
            nn.init.normal_(self.lm_head.weight, std=std)
        for linear in self.hidden_matrices():
            # muP: std ∝ 1/sqrt(fan_in), equal to init_std at the base width. Every hidden fan_in (d_model or
            # d_ff) grows by the same width multiplier relative to the base model, hence one factor.
            nn.init.normal_(linear.weight, std=std / math.sqrt(self.width_mult))
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        head = self.wte.weight if self.lm_head is None else self.lm_head.weight
        logits = F.linear(x, head)
        if self.output_scale != 1.0:
            logits = logits * self.output_scale
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
