"""The finetuning objective around a recogniser: embedding -> BNNeck -> triplet + cross-entropy."""

from __future__ import annotations

import torch
from torch import nn

from ..config import FinetuneConfig
from .losses import recognition_loss


class Finetuner(nn.Module):
    def __init__(self, recognizer: nn.Module, cfg: FinetuneConfig):
        super().__init__()
        self.recognizer = recognizer
        self.cfg = cfg

    def forward(self, features: torch.Tensor, padding_mask: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """features `(B, T, 17, C)`, padding_mask `(B, T)`, labels `(B,)` -> loss, logged parts."""
        embedding = self.recognizer.forward_features(features, padding_mask)           # (B, E)
        _, logits = self.recognizer.forward_head(embedding)
        return recognition_loss(embedding, logits, labels, margin=self.cfg.triplet_margin,
                                mining=self.cfg.triplet_mining, ce_weight=self.cfg.ce_weight,
                                label_smoothing=self.cfg.label_smoothing)
