"""The second floor: a plain whole-body transformer with one token per temporal patch of frames.

Issue 4's "plain whole-body transformer without pretraining": each token is all 17 joints'
channels over `frames_per_token` frames (1 = one token per frame), embedded by a two-layer MLP,
plus a sinusoidal time encoding and a class token, then `t1_depth` vanilla transformer layers.
The embedding is a linear map of [class token, mean, max] over the visible tokens, followed by the
same BNNeck head as BPMT, so training, evaluation, export and serving are shared. No body parts,
no pretraining: it answers how much BPMT's pieces add to a good plain model (`model.arch=frame`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..skeleton import NUM_JOINTS
from .heads import BNNeckHead, EmbeddingNetwork
from .part_encoder import time_encoding, token_padding
from .recognizer import masked_mean_max
from .stack import GridTransformer


class FrameTransformerRecognizer(EmbeddingNetwork):
    def __init__(self, cfg: ModelConfig, in_channels: int, num_classes: int):
        super().__init__()
        self.frames_per_token = cfg.frames_per_token
        width = NUM_JOINTS * in_channels * cfg.frames_per_token
        self.proj = nn.Sequential(nn.Linear(width, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, cfg.dim))
        self.cls_token = nn.Parameter(torch.randn(cfg.dim) * 0.02)
        self.transformer = GridTransformer("vanilla", cfg.t1_depth, cfg.dim, cfg.heads, cfg.ffn_ratio, cfg.dropout)
        self.embed = nn.Linear(3 * cfg.dim, cfg.embed_dim)
        self.head = BNNeckHead(cfg.embed_dim, num_classes)

    def forward_features(self, features: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """features `(B, T, 17, C)`, padding_mask `(B, T)` True = padded -> embedding `(B, E)`."""
        B, T, _, _ = features.shape
        p = self.frames_per_token
        if T % p:
            raise ValueError(f"sequence length {T} is not a multiple of frames_per_token={p}")
        tokens = self.proj(features.reshape(B, T // p, -1))                           # (B, Tt, p*17*C)->(B, Tt, D)
        tokens = tokens + time_encoding(T // p, tokens.shape[-1], tokens.device)[None]
        hidden = token_padding(padding_mask, p)                                       # (B, Tt)
        # One spatial unit per time step: the grid transformer's (B, S=1, Tt, D) layout.
        out, cls = self.transformer(tokens[:, None], self.cls_token.expand(B, -1), hidden[:, None])
        return self.embed(torch.cat([cls, masked_mean_max(out, hidden[:, None])], dim=-1))
