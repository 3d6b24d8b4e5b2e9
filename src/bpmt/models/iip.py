"""The IIP-Transformer layer (Wang et al., arXiv 2110.13385), implemented from the paper's text.

Tokens lie on a grid `(B, S, T, D)` of spatial units x time steps, plus one class token `(B, D)`.
One layer = S-IIPA -> add&norm -> T-IIPA -> add&norm -> FFN -> add&norm (post-norm, Fig. 5B).

IIPA(x) = multi-head attention(Q, K, V) + f_intra(V): the attention carries relations between
tokens ("inter"), f_intra a per-token MLP on V ("intra"). In S-IIPA each time step's S tokens
attend to each other and to the class token's K/V; in T-IIPA each unit's T tokens do the same
along time. The class token attends to all S*T tokens and itself in both.

The same layer serves T1 (S = joints of one body part) and T2 (S = body parts).
The paper leaves f_intra's form and the head count open; here f_intra = Linear-GELU-Linear.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .attention import FeedForward, attend, pack, unpack


class IIPAttention(nn.Module):
    """S-IIPA (`axis="spatial"`) or T-IIPA (`axis="temporal"`) with the class-token branch."""

    def __init__(self, dim: int, heads: int, axis: Literal["spatial", "temporal"]):
        super().__init__()
        self.heads, self.axis = heads, axis
        self.qkv = nn.Linear(dim, 3 * dim)
        self.intra = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor, cls: torch.Tensor,
                hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens `(B, S, T, D)`, cls `(B, D)`, hidden `(B, S, T)` True = not a key."""
        B, S, T, D = tokens.shape
        return unpack(self.forward_packed(pack(tokens, cls), S, T, hidden), S, T)

    def forward_packed(self, x: torch.Tensor, S: int, T: int, hidden: torch.Tensor) -> torch.Tensor:
        """The same on packed rows: x `(B, 1+S*T, D)` = the class token, then the tokens in (S, T) order.

        Every per-token map (qkv, f_intra, the output projection) runs once over all rows, the
        class token's included; only the attention differs between the grid tokens and the class token.
        """
        B, _, D = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)                    # (B, 1+ST, D) each
        intra = self.intra(v)                                     # f_intra(V), every row
        q_, k_, v_ = (t[:, 1:].reshape(B, S, T, D) for t in (q, k, v))
        hid = hidden
        if self.axis == "spatial":                                # groups = time steps
            q_, k_, v_, hid = q_.transpose(1, 2), k_.transpose(1, 2), v_.transpose(1, 2), hidden.transpose(1, 2)
        G, L = q_.shape[1], q_.shape[2]                           # q_ (B, G, L, D); groups = units if temporal
        keys = torch.cat([k_, k[:, None, :1].expand(B, G, 1, D)], dim=2)          # (B, G, L+1, D)
        values = torch.cat([v_, v[:, None, :1].expand(B, G, 1, D)], dim=2)        # (B, G, L+1, D)
        key_hidden = torch.cat([hid, hid.new_zeros(B, G, 1)], dim=2)              # (B, G, L+1)
        out = attend(q_.reshape(B * G, L, D), keys.reshape(B * G, L + 1, D),
                     values.reshape(B * G, L + 1, D), self.heads, key_hidden.reshape(B * G, L + 1))
        out = out.view(B, G, L, D)
        if self.axis == "spatial":
            out = out.transpose(1, 2)                             # (B, S, T, D)
        # The class token attends to itself and all S*T tokens: the packed rows are exactly its keys.
        all_hidden = torch.cat([hidden.new_zeros(B, 1), hidden.reshape(B, S * T)], dim=1)   # (B, 1+ST)
        cls_out = attend(q[:, :1], k, v, self.heads, all_hidden)                   # (B, 1, D)
        return self.proj(torch.cat([cls_out, out.reshape(B, S * T, D)], dim=1) + intra)


class IIPLayer(nn.Module):
    """S-IIPA -> add&norm -> T-IIPA -> add&norm -> FFN -> add&norm (no FFN after S-IIPA)."""

    def __init__(self, dim: int, heads: int, ffn_ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        self.spatial = IIPAttention(dim, heads, "spatial")
        self.temporal = IIPAttention(dim, heads, "temporal")
        self.ffn = FeedForward(dim, ffn_ratio, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor, cls: torch.Tensor,
                hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens `(B, S, T, D)`, cls `(B, D)`, hidden `(B, S, T)` -> same shapes."""
        B, S, T, D = tokens.shape
        return unpack(self.forward_packed(pack(tokens, cls), S, T, hidden), S, T)

    def forward_packed(self, x: torch.Tensor, S: int, T: int, hidden: torch.Tensor) -> torch.Tensor:
        """The same on packed rows `(B, 1+S*T, D)` (`pack`): norms and FFN run once over all rows."""
        x = self.norm1(x + self.drop(self.spatial.forward_packed(x, S, T, hidden)))
        x = self.norm2(x + self.drop(self.temporal.forward_packed(x, S, T, hidden)))
        return self.norm3(x + self.drop(self.ffn(x)))
