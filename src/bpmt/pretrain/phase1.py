"""Phase 1 - modality-level masked pretraining: each body part alone, mask -> encode -> decode -> loss.

For every part: mask a fraction of its (joint, time-step) tokens, derive the input channels from
the visible coordinates only (`data.channels`: nothing computed from a masked coordinate reaches
the encoder), encode with T1 (masked tokens become the mask token and are hidden from attention),
decode with a light grid transformer and a linear head, L2 loss on the masked tokens' normalised
coordinates. The decoder is discarded.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.channels import derive_channels
from ..models.part_encoder import PartEncoders, PartFeatures
from ..models.stack import GridTransformer
from .masking import make_mask, visible_joints
from .targets import masked_l2, patch_targets


class Phase1Pretrainer(nn.Module):
    def __init__(self, encoders: PartEncoders, channels: list[str], *, layer: str, heads: int,
                 decoder_depth: int, mask_ratio: float, mask_type: str):
        super().__init__()
        self.encoders, self.channels = encoders, list(channels)
        width, p = encoders.out_dim, encoders.frames_per_token
        self.decoder = GridTransformer(layer, decoder_depth, width, heads, 2.0, 0.0)
        self.predict = nn.Linear(width, p * 2)
        self.mask_ratio, self.mask_type = mask_ratio, mask_type

    def draw_mask(self, part: str, batch: int, steps: int, generator: torch.Generator) -> torch.Tensor:
        """`(B, J_p, Tt)` True = masked out."""
        return make_mask(self.mask_type, batch, len(self.encoders.joints[part]), steps, self.mask_ratio, generator)

    def encode(self, part: str, keypoints: torch.Tensor, padding_mask: torch.Tensor,
               mask: torch.Tensor) -> tuple[torch.Tensor, PartFeatures]:
        """keypoints `(B, T, 17, 3)`, mask `(B, J_p, Tt)` -> (the encoder's input `(B, T, J_p, C)`,
        T1's features of the part)."""
        joints = self.encoders.joints[part]
        visible = visible_joints(padding_mask, {part: mask}, self.encoders.joints, self.encoders.frames_per_token)
        features = derive_channels(keypoints, self.channels, visible)[:, :, joints]     # (B, T, J_p, C)
        return features, self.encoders.forward_part(part, features, padding_mask, mask)

    def forward(self, keypoints: torch.Tensor, padding_mask: torch.Tensor,
                generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """keypoints `(B, T, 17, 3)` normalised, padding_mask `(B, T)` -> loss, per-part losses."""
        B, T = padding_mask.shape
        steps = T // self.encoders.frames_per_token
        losses = {}
        for part in self.encoders.parts:
            mask = self.draw_mask(part, B, steps, generator).to(keypoints.device)
            _, encoded = self.encode(part, keypoints, padding_mask, mask)
            frame_hidden = encoded.hidden & ~mask                                     # padding only
            decoded, _ = self.decoder(encoded.tokens, encoded.cls, frame_hidden)
            target = patch_targets(keypoints[:, :, self.encoders.joints[part], :2], self.encoders.frames_per_token)
            losses[part] = masked_l2(self.predict(decoded), target, mask & ~frame_hidden)
        loss = torch.stack(list(losses.values())).mean()
        return loss, {k: float(v.detach()) for k, v in losses.items()}
