"""The vanilla-transformer baseline layer ("use a basic transformer first"): full self-attention
over all S*T grid tokens plus the class token, then FFN, post-norm. Same interface as `IIPLayer`,
so the whole pipeline can swap one for the other by config."""

from __future__ import annotations

import torch
from torch import nn

from .attention import FeedForward, attend, pack, unpack


class VanillaLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ffn = FeedForward(dim, ffn_ratio, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor, cls: torch.Tensor,
                hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens `(B, S, T, D)`, cls `(B, D)`, hidden `(B, S, T)` True = not a key -> same shapes."""
        B, S, T, D = tokens.shape
        return unpack(self.forward_packed(pack(tokens, cls), S, T, hidden), S, T)

    def forward_packed(self, x: torch.Tensor, S: int, T: int, hidden: torch.Tensor) -> torch.Tensor:
        """The same on packed rows `(B, 1+S*T, D)` (`pack`), the class token first."""
        B = x.shape[0]
        key_hidden = torch.cat([hidden.new_zeros(B, 1), hidden.reshape(B, S * T)], dim=1)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        x = self.norm1(x + self.drop(self.proj(attend(q, k, v, self.heads, key_hidden))))
        return self.norm2(x + self.drop(self.ffn(x)))
