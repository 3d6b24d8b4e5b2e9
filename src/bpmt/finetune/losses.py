"""Metric-learning losses for finetuning: triplet (batch-hard or batch-all) + cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def euclidean(a: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances `(B, B)` of embeddings `(B, E)` (gradient-safe at zero)."""
    squared = (a * a).sum(dim=1)
    d2 = squared[:, None] + squared[None, :] - 2.0 * a @ a.T
    return d2.clamp(min=1e-12).sqrt()


def triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float,
                 mining: str = "hard") -> torch.Tensor:
    """Batch-hard (hardest positive and negative per anchor) or batch-all (mean over the
    triplets that violate the margin, as OpenGait) triplet loss. embeddings `(B, E)`, labels `(B,)`."""
    dist = euclidean(embeddings)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive, negative = same & ~eye, ~same
    if mining == "hard":
        hardest_pos = dist.masked_fill(~positive, float("-inf")).amax(dim=1)
        hardest_neg = dist.masked_fill(~negative, float("inf")).amin(dim=1)
        valid = positive.any(dim=1) & negative.any(dim=1)
        losses = F.relu(hardest_pos - hardest_neg + margin)[valid]
        return losses.mean() if len(losses) else dist.sum() * 0.0
    if mining == "all":
        triplets = dist[:, :, None] - dist[:, None, :] + margin                  # (anchor, pos, neg)
        valid = positive[:, :, None] & negative[:, None, :]
        losses = F.relu(triplets)[valid]
        active = losses > 0
        return losses[active].mean() if active.any() else dist.sum() * 0.0
    raise ValueError(f"unknown triplet mining {mining!r} (hard, all)")


def recognition_loss(embedding: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, *, margin: float,
                     mining: str, ce_weight: float, label_smoothing: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Triplet on the pre-BN embedding + weighted cross-entropy on BNNeck logits."""
    triplet = triplet_loss(embedding, labels, margin, mining)
    ce = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    accuracy = (logits.argmax(dim=1) == labels).float().mean()
    return triplet + ce_weight * ce, {"triplet": float(triplet.detach()), "ce": float(ce.detach()),
                                      "accuracy": float(accuracy)}
