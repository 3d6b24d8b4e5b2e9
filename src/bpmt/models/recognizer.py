"""The BPMT recogniser: body parts -> T1 (per part) -> T2 fusion -> output fusion -> embedding -> head.

The embedding reads T2's class token and the masked mean and max of each part's fused tokens (its
T1 tokens cross-attended to T2's output). T1's class tokens are not read here: each is the key and
value every token of its part attends to in every layer, and phase 1's decoder starts from its
output; reading it in the embedding as well was measured to hurt (docs/results.md).

`forward_features` is the seam between pretraining and finetuning (it returns the pre-BN
embedding); `forward_head` adds the BNNeck.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..skeleton import Partition
from .fusion import PartFusion
from .heads import BNNeckHead, EmbeddingNetwork
from .part_encoder import PartEncoders, PartFeatures


def build_encoders(cfg: ModelConfig, partition: Partition, in_channels: int) -> PartEncoders:
    return PartEncoders(partition, in_channels, layer=cfg.layer, dim=cfg.dim, heads=cfg.heads,
                        depth=cfg.t1_depth, ffn_ratio=cfg.ffn_ratio, dropout=cfg.dropout,
                        frames_per_token=cfg.frames_per_token, shared=cfg.t1_shared,
                        reduce_dims=list(cfg.reduce_dims))


def build_fusion(cfg: ModelConfig, partition: Partition, dim: int) -> PartFusion:
    return PartFusion(list(partition), layer=cfg.layer, dim=dim, heads=cfg.heads, depth=cfg.t2_depth,
                      ffn_ratio=cfg.ffn_ratio, dropout=cfg.dropout)


def masked_mean_max(tokens: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """tokens `(B, J, Tt, D)`, hidden `(B, J, Tt)` -> concat of mean and max over visible tokens `(B, 2D)`."""
    visible = ~hidden[..., None]                                                  # (B, J, Tt, 1)
    count = visible.sum(dim=(1, 2)).clamp(min=1)                                  # (B, 1)
    mean = (tokens * visible).sum(dim=(1, 2)) / count
    peak = tokens.masked_fill(~visible, float("-inf")).amax(dim=(1, 2))
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    return torch.cat([mean, peak], dim=-1)


class BPMTRecognizer(EmbeddingNetwork):
    def __init__(self, cfg: ModelConfig, partition: Partition, in_channels: int, num_classes: int):
        super().__init__()
        self.encoders = build_encoders(cfg, partition, in_channels)
        width = self.encoders.out_dim
        self.fusion = build_fusion(cfg, partition, width)
        self.embed = nn.Linear((2 * len(partition) + 1) * width, cfg.embed_dim)
        self.head = BNNeckHead(cfg.embed_dim, num_classes)

    def forward_features(self, features: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """features `(B, T, 17, C)`, padding_mask `(B, T)` True = padded -> embedding `(B, E)`."""
        parts: dict[str, PartFeatures] = self.encoders(features, padding_mask)
        z, cls, z_hidden = self.fusion(parts)
        pooled = [cls]                                                            # T2's class token (B, D)
        fused = self.fusion.fuse_parts(parts, z, z_hidden)                        # {part: (B, J_p, Tt, D)}
        for name, part in parts.items():
            pooled.append(masked_mean_max(fused[name], part.hidden))            # (B, 2D)
        return self.embed(torch.cat(pooled, dim=-1))                              # (B, E)


def build_recognizer(cfg: ModelConfig, partition: Partition, in_channels: int, num_classes: int) -> nn.Module:
    """The recogniser `cfg.arch` names: BPMT, or the plain frame-token transformer floor."""
    if cfg.arch == "frame":
        from .frame_baseline import FrameTransformerRecognizer
        return FrameTransformerRecognizer(cfg, in_channels, num_classes)
    return BPMTRecognizer(cfg, partition, in_channels, num_classes)
