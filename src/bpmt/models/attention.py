"""Masked multi-head attention primitives shared by every transformer layer in BPMT.

Mask convention (written down once): `hidden` is a bool tensor, True = this token may not be
attended to (padded frame or masked-out token). Every softmax keeps at least one visible key
(callers always append a class token), so no row is ever all-hidden.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
           key_hidden: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head scaled dot-product attention.

    q `(N, Lq, D)`, k/v `(N, Lk, D)`, key_hidden `(N, Lk)` True = ignore -> `(N, Lq, D)`.
    """
    N, Lq, D = q.shape
    Lk = k.shape[1]
    hd = D // heads
    q = q.view(N, Lq, heads, hd).transpose(1, 2)          # (N, h, Lq, hd)
    k = k.reshape(N, Lk, heads, hd).transpose(1, 2)       # (N, h, Lk, hd)
    v = v.reshape(N, Lk, heads, hd).transpose(1, 2)       # (N, h, Lk, hd)
    mask = None
    if key_hidden is not None:
        # A row with every key hidden would give NaN; let it see all keys (its output is ignored anyway).
        key_hidden = key_hidden & ~key_hidden.all(dim=-1, keepdim=True)
        mask = ~key_hidden[:, None, None, :]                                # (N, 1, 1, Lk) True = attend
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)          # (N, h, Lq, hd)
    return out.transpose(1, 2).reshape(N, Lq, D)


def pack(tokens: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """tokens `(B, S, T, D)`, cls `(B, D)` -> rows `(B, 1+S*T, D)`, the class token first."""
    B, S, T, D = tokens.shape
    return torch.cat([cls[:, None], tokens.reshape(B, S * T, D)], dim=1)


def unpack(x: torch.Tensor, S: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of `pack`: rows `(B, 1+S*T, D)` -> tokens `(B, S, T, D)`, cls `(B, D)`."""
    return x[:, 1:].reshape(x.shape[0], S, T, x.shape[-1]), x[:, 0]


class FeedForward(nn.Module):
    def __init__(self, dim: int, ratio: float, dropout: float = 0.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossAttention(nn.Module):
    """Post-norm residual cross-attention: queries `(B, Lq, D)` attend to context `(B, Lk, D)`."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, queries: torch.Tensor, context: torch.Tensor,
                context_hidden: torch.Tensor | None = None) -> torch.Tensor:
        k, v = self.kv(context).chunk(2, dim=-1)                      # (B, Lk, D) each
        out = attend(self.q(queries), k, v, self.heads, context_hidden)  # (B, Lq, D)
        return self.norm(queries + self.drop(self.proj(out)))

    def attend_others(self, tokens: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Each group's tokens attend to every *other* group's tokens, all groups in one pass.

        tokens `(B, G, L, D)`, hidden `(B, G, L)` -> `(B, G, L, D)`; equal to calling `forward` once
        per group g with the other groups' tokens as context (queries and keys/values are computed
        once; a group's own keys are hidden instead of cut out).
        """
        B, G, L, D = tokens.shape
        flat = tokens.reshape(B, G * L, D)
        q = self.q(flat).view(B * G, L, D)
        k, v = self.kv(flat).chunk(2, dim=-1)                                   # (B, G*L, D) each
        group = torch.arange(G * L, device=tokens.device) // L                  # each key's group
        own = group[None, :] == torch.arange(G, device=tokens.device)[:, None]  # (G, G*L) True = own key
        key_hidden = hidden.reshape(B, 1, G * L) | own                          # (B, G, G*L)
        # `attend` lets a row whose keys are all hidden see them all; here "all" = the other groups'.
        key_hidden = key_hidden & (~key_hidden.all(dim=-1, keepdim=True) | own)
        out = attend(q, k[:, None].expand(B, G, G * L, D).reshape(B * G, G * L, D),
                     v[:, None].expand(B, G, G * L, D).reshape(B * G, G * L, D), self.heads,
                     key_hidden.reshape(B * G, G * L))                           # (B*G, L, D)
        return self.norm(tokens + self.drop(self.proj(out)).view(B, G, L, D))

