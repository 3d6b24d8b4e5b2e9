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


class EmbeddingNetwork(nn.Module):
    """A recogniser whose `forward_features` (B, T, 17, C) -> pre-BN embedding `(B, E)` is topped by a
    BNNeck `head`: the training step reads `forward_features` and `forward_head`; test time and
    export read `forward`, the post-BN feature."""

    head: BNNeckHead

    def forward_features(self, features: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(embedding)

    def forward(self, features: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """Test-time embedding: the post-BN feature `(B, E)`."""
        return self.forward_head(self.forward_features(features, padding_mask))[0]
