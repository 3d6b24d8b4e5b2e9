"""Phase 1 - modality-level masked pretraining: each body part alone, mask -> encode -> decode -> loss.

For every part: mask a fraction of its (joint, time-step) tokens, encode with T1 (masked tokens
become the mask token and are hidden from attention), decode with a light grid transformer and
a linear head, L2 loss on the masked tokens' normalised coordinates. The decoder is discarded.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.part_encoder import PartEncoders
from ..models.stack import GridTransformer
from .masking import make_mask
from .targets import masked_l2, patch_targets


class Phase1Pretrainer(nn.Module):
    def __init__(self, encoders: PartEncoders, *, layer: str, heads: int, decoder_depth: int,
                 mask_ratio: float, mask_type: str):
        super().__init__()
        self.encoders = encoders
        width, p = encoders.out_dim, encoders.frames_per_token
        self.decoder = GridTransformer(layer, decoder_depth, width, heads, 2.0, 0.0)
        self.predict = nn.Linear(width, p * 2)
        self.mask_ratio, self.mask_type = mask_ratio, mask_type

    def forward(self, features: torch.Tensor, coords: torch.Tensor, padding_mask: torch.Tensor,
                generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """features `(B, T, 17, C)`, coords `(B, T, 17, 2)` targets, padding_mask `(B, T)` -> loss, per-part losses."""
        B, T = padding_mask.shape
        steps = T // self.encoders.frames_per_token
        losses = {}
        for part in self.encoders.parts:
            joints = self.encoders.joints[part]
            mask = make_mask(self.mask_type, B, len(joints), steps, self.mask_ratio, generator).to(features.device)
            encoded = self.encoders.forward_part(part, features[:, :, joints], padding_mask, mask)
            frame_hidden = encoded.hidden & ~mask                                     # padding only
            decoded, _ = self.decoder(encoded.tokens, encoded.cls, frame_hidden)
            target = patch_targets(coords[:, :, joints], self.encoders.frames_per_token)
            losses[part] = masked_l2(self.predict(decoded), target, mask & ~frame_hidden)
        loss = torch.stack(list(losses.values())).mean()
        return loss, {k: float(v.detach()) for k, v in losses.items()}
