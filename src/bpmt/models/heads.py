"""The recognition head: BNNeck (Luo et al., "Bag of Tricks" for re-id), as in GPGait/OpenGait.

The triplet loss sees the pre-BN embedding, cross-entropy sees logits of the post-BN feature, and
test-time retrieval uses the post-BN feature."""

from __future__ import annotations

import torch
from torch import nn


class BNNeckHead(nn.Module):
    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, num_classes, bias=False)

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """embedding `(B, E)` -> post-BN feature `(B, E)`, logits `(B, num_classes)`."""
        feature = self.bn(embedding)
        return feature, self.classifier(feature)
