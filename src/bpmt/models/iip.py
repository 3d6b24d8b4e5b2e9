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

from .attention import FeedForward, attend


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
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)               # (B, S, T, D) each
        qc, kc, vc = self.qkv(cls).chunk(3, dim=-1)               # (B, D) each
        if self.axis == "spatial":                                # groups = time steps
            q_, k_, v_, hid = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), hidden.transpose(1, 2)
        else:                                                     # groups = units
            q_, k_, v_, hid = q, k, v, hidden
        G, L = q_.shape[1], q_.shape[2]                           # q_ (B, G, L, D)
        keys = torch.cat([k_, kc[:, None, None, :].expand(B, G, 1, D)], dim=2)    # (B, G, L+1, D)
        values = torch.cat([v_, vc[:, None, None, :].expand(B, G, 1, D)], dim=2)  # (B, G, L+1, D)
        key_hidden = torch.cat([hid, hid.new_zeros(B, G, 1)], dim=2)              # (B, G, L+1)
        out = attend(q_.reshape(B * G, L, D), keys.reshape(B * G, L + 1, D),
                     values.reshape(B * G, L + 1, D), self.heads, key_hidden.reshape(B * G, L + 1))
        out = out.view(B, G, L, D) + self.intra(v_)               # (B, G, L, D)
        if self.axis == "spatial":
            out = out.transpose(1, 2)                             # (B, S, T, D)

        all_keys = torch.cat([kc[:, None], k.reshape(B, S * T, D)], dim=1)        # (B, 1+ST, D)
        all_values = torch.cat([vc[:, None], v.reshape(B, S * T, D)], dim=1)
        all_hidden = torch.cat([hidden.new_zeros(B, 1), hidden.reshape(B, S * T)], dim=1)
        cls_out = attend(qc[:, None], all_keys, all_values, self.heads, all_hidden)[:, 0] + self.intra(vc)
        return self.proj(out), self.proj(cls_out)


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
        t, c = self.spatial(tokens, cls, hidden)
        tokens, cls = self.norm1(tokens + self.drop(t)), self.norm1(cls + self.drop(c))
        t, c = self.temporal(tokens, cls, hidden)
        tokens, cls = self.norm2(tokens + self.drop(t)), self.norm2(cls + self.drop(c))
        return self.norm3(tokens + self.drop(self.ffn(tokens))), self.norm3(cls + self.drop(self.ffn(cls)))
