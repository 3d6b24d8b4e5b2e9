"""Stacks of grid-transformer layers, chosen by name: the IIP layer or the vanilla baseline."""

from __future__ import annotations

import torch
from torch import nn

from .attention import pack, unpack
from .iip import IIPLayer
from .vanilla import VanillaLayer

LAYER_KINDS = {"iip": IIPLayer, "vanilla": VanillaLayer}


class GridTransformer(nn.Module):
    """`depth` layers over grid tokens `(B, S, T, D)` plus a class token `(B, D)`."""

    def __init__(self, kind: str, depth: int, dim: int, heads: int, ffn_ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        if kind not in LAYER_KINDS:
            raise ValueError(f"unknown layer kind {kind!r} (known: {', '.join(LAYER_KINDS)})")
        self.layers = nn.ModuleList(LAYER_KINDS[kind](dim, heads, ffn_ratio, dropout) for _ in range(depth))

    def forward(self, tokens: torch.Tensor, cls: torch.Tensor,
                hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, S, T, D = tokens.shape
        x = pack(tokens, cls)                                   # (B, 1+S*T, D): packed once for all layers
        for layer in self.layers:
            x = layer.forward_packed(x, S, T, hidden)
        return unpack(x, S, T)
