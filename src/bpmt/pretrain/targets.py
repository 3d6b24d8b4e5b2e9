"""Reconstruction targets and loss shared by both pretraining phases."""

from __future__ import annotations

import torch

from ..models.part_encoder import patchify


def patch_targets(coords: torch.Tensor, frames_per_token: int) -> torch.Tensor:
    """Joint coordinates `(B, T, J_p, 2)` -> per-token targets `(B, J_p, Tt, p*2)`, normalised per
    sample and part to zero mean and unit variance (MAE's normalised-pixel targets)."""
    patches = patchify(coords, frames_per_token)
    mean = patches.mean(dim=(1, 2, 3), keepdim=True)
    std = patches.std(dim=(1, 2, 3), keepdim=True)
    return (patches - mean) / (std + 1e-6)


def masked_l2(prediction: torch.Tensor, target: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over masked-out tokens only. prediction/target `(B, J, Tt, E)`, mask `(B, J, Tt)`."""
    per_token = ((prediction - target) ** 2).mean(dim=-1)                          # (B, J, Tt)
    weight = token_mask.to(per_token.dtype)
    return (per_token * weight).sum() / weight.sum().clamp(min=1.0)
