"""Phase 2 - modality-pair masked pretraining: pairs of body parts through T1, cross-attention and T2.

Each step draws one pair (i, j) of parts (over training, all pairs), masks tokens of both, encodes
both with T1, fuses them (cross-attention both ways, then T2 with S = 2 part tokens), and
reconstructs each part's masked tokens from its T1 tokens cross-attended with T2's output.
One T2 is shared across all pairs; T1 is trainable or frozen by config. Decoders are discarded.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ..models.fusion import PartFusion
from ..models.part_encoder import PartEncoders
from .masking import make_mask
from .targets import masked_l2, patch_targets


class Phase2Pretrainer(nn.Module):
    def __init__(self, encoders: PartEncoders, fusion: PartFusion, *, mask_ratio: float, mask_type: str,
                 freeze_t1: bool):
        super().__init__()
        if len(encoders.parts) < 2:
            raise ValueError("phase 2 needs at least two body parts")
        self.encoders, self.fusion = encoders, fusion
        self.predict = nn.Linear(encoders.out_dim, encoders.frames_per_token * 2)
        self.pairs = list(itertools.combinations(encoders.parts, 2))
        self.mask_ratio, self.mask_type = mask_ratio, mask_type
        self.freeze_t1 = freeze_t1
        if freeze_t1:
            encoders.requires_grad_(False)

    def forward(self, features: torch.Tensor, coords: torch.Tensor, padding_mask: torch.Tensor,
                generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """features `(B, T, 17, C)`, coords `(B, T, 17, 2)`, padding_mask `(B, T)` -> loss, {pair index}."""
        B, T = padding_mask.shape
        steps = T // self.encoders.frames_per_token
        pair_index = int(torch.randint(len(self.pairs), (1,), generator=generator))
        pair = self.pairs[pair_index]
        masks, encoded = {}, {}
        for part in pair:
            joints = self.encoders.joints[part]
            masks[part] = make_mask(self.mask_type, B, len(joints), steps, self.mask_ratio, generator).to(features.device)
            encoded[part] = self.encoders.forward_part(part, features[:, :, joints], padding_mask, masks[part])
        z, _, z_hidden = self.fusion(encoded)
        losses = {}
        for part in pair:
            joints = self.encoders.joints[part]
            fused = self.fusion.fuse_part(encoded[part], z, z_hidden)                # (B, J_p, Tt, D)
            target = patch_targets(coords[:, :, joints], self.encoders.frames_per_token)
            padded = encoded[part].hidden & ~masks[part]
            losses[part] = masked_l2(self.predict(fused), target, masks[part] & ~padded)
        loss = torch.stack(list(losses.values())).mean()
        return loss, {"pair": float(pair_index)}
