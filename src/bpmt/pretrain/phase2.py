"""Phase 2 - modality-pair masked pretraining: pairs of body parts through T1, cross-attention and T2.

Each step draws one pair (i, j) of parts (over training, all pairs), masks tokens of both, derives
both parts' input channels from the coordinates visible under *both* masks (a visible elbow whose
parent shoulder is masked in the torso has no bone channel), encodes both with T1, fuses them
(cross-attention both ways, then T2 with S = 2 part tokens), and reconstructs each part's masked
tokens from its T1 tokens cross-attended with T2's output. One T2 is shared across all pairs; T1
is trainable or frozen by config. The prediction head is discarded.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ..data.channels import derive_channels
from ..models.fusion import PartFusion
from ..models.part_encoder import PartEncoders, PartFeatures
from .masking import make_mask, visible_joints
from .targets import masked_l2, patch_targets


class Phase2Pretrainer(nn.Module):
    def __init__(self, encoders: PartEncoders, fusion: PartFusion, channels: list[str], *, mask_ratio: float,
                 mask_type: str, freeze_t1: bool):
        super().__init__()
        if len(encoders.parts) < 2:
            raise ValueError("phase 2 needs at least two body parts")
        self.encoders, self.fusion, self.channels = encoders, fusion, list(channels)
        self.predict = nn.Linear(encoders.out_dim, encoders.frames_per_token * 2)
        self.pairs = list(itertools.combinations(encoders.parts, 2))
        self.mask_ratio, self.mask_type = mask_ratio, mask_type
        self.freeze_t1 = freeze_t1
        if freeze_t1:
            encoders.requires_grad_(False)

    def draw(self, batch: int, steps: int, generator: torch.Generator) -> tuple[int, dict[str, torch.Tensor]]:
        """This step's pair index and its masks `{part: (B, J_p, Tt)}` True = masked out."""
        pair_index = int(torch.randint(len(self.pairs), (1,), generator=generator))
        masks = {part: make_mask(self.mask_type, batch, len(self.encoders.joints[part]), steps, self.mask_ratio,
                                 generator)
                 for part in self.pairs[pair_index]}
        return pair_index, masks

    def encode(self, keypoints: torch.Tensor, padding_mask: torch.Tensor,
               masks: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, PartFeatures]]:
        """keypoints `(B, T, 17, 3)`, masks of the pair -> (the encoders' input `(B, T, 17, C)`, T1's
        features of both parts)."""
        visible = visible_joints(padding_mask, masks, self.encoders.joints, self.encoders.frames_per_token)
        features = derive_channels(keypoints, self.channels, visible)                  # (B, T, 17, C)
        encoded = {part: self.encoders.forward_part(part, features[:, :, self.encoders.joints[part]],
                                                    padding_mask, mask)
                   for part, mask in masks.items()}
        return features, encoded

    def forward(self, keypoints: torch.Tensor, padding_mask: torch.Tensor,
                generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """keypoints `(B, T, 17, 3)` normalised, padding_mask `(B, T)` -> loss, {pair index}."""
        B, T = padding_mask.shape
        pair_index, masks = self.draw(B, T // self.encoders.frames_per_token, generator)
        masks = {part: mask.to(keypoints.device) for part, mask in masks.items()}
        _, encoded = self.encode(keypoints, padding_mask, masks)
        z, _, z_hidden = self.fusion(encoded)
        losses = {}
        fused_parts = self.fusion.fuse_parts(encoded, z, z_hidden)
        for part, mask in masks.items():
            fused = fused_parts[part]                                                # (B, J_p, Tt, D)
            target = patch_targets(keypoints[:, :, self.encoders.joints[part], :2], self.encoders.frames_per_token)
            padded = encoded[part].hidden & ~mask
            losses[part] = masked_l2(self.predict(fused), target, mask & ~padded)
        loss = torch.stack(list(losses.values())).mean()
        return loss, {"pair": float(pair_index)}
