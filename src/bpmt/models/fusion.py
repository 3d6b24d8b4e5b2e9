"""T2, the part-fusion transformer (OmniVec2's g with its cross-attentions), for 2 or 5 parts.

1. Each part's T1 tokens are pooled over its joints into one part token per time step.
2. Cross-attention between parts: each part's time tokens attend to the other parts' tokens
   (for a pair (i, j): i attends to j and j to i; for five parts: each to the four others),
   all parts in one pass (`CrossAttention.attend_others`).
3. T2 = a grid transformer with S = part tokens (IIP: S-IIPA across parts per time step,
   T-IIPA along time per part) and its own class token.
4. Output fusion: each part's T1 tokens (queries) attend to T2's output (context). Phase 2's
   decoders read this to reconstruct masked tokens; finetuning pools it into the embedding.

One module serves the pair pretraining and the five-part finetuning, so phase-2 weights carry over.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import CrossAttention
from .part_encoder import PartFeatures
from .stack import GridTransformer


def pool_joints(features: PartFeatures) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the visible joint tokens per time step: `(B, Tt, D)` and hidden `(B, Tt)`."""
    visible = (~features.hidden).to(features.tokens.dtype)[..., None]            # (B, J_p, Tt, 1)
    total = (features.tokens * visible).sum(dim=1)                                # (B, Tt, D)
    count = visible.sum(dim=1)                                                    # (B, Tt, 1)
    return total / count.clamp(min=1.0), count[..., 0] == 0


class PartFusion(nn.Module):
    def __init__(self, parts: list[str], *, layer: str, dim: int, heads: int, depth: int,
                 ffn_ratio: float, dropout: float):
        super().__init__()
        self.parts = list(parts)
        self.part_embed = nn.Parameter(torch.randn(len(self.parts), dim) * 0.02)
        self.cls_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.cross = CrossAttention(dim, heads, dropout)
        self.t2 = GridTransformer(layer, depth, dim, heads, ffn_ratio, dropout)
        self.out_cross = CrossAttention(dim, heads, dropout)

    def forward(self, features: dict[str, PartFeatures]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`{part: PartFeatures}` (2..5 parts) -> T2 tokens `(B, P, Tt, D)`, cls `(B, D)`, hidden `(B, P, Tt)`."""
        names = list(features)
        pooled = [pool_joints(features[n]) for n in names]
        tokens = torch.stack([t for t, _ in pooled], dim=1)                          # (B, P, Tt, D)
        hidden = torch.stack([h for _, h in pooled], dim=1)                          # (B, P, Tt)
        index = torch.tensor([self.parts.index(n) for n in names], device=tokens.device)
        tokens = tokens + self.part_embed[index][None, :, None, :]
        B, P, Tt, D = tokens.shape
        if P > 1:
            tokens = self.cross.attend_others(tokens, hidden)                        # (B, P, Tt, D)
        z, cls = self.t2(tokens, self.cls_token.expand(B, -1), hidden)
        return z, cls, hidden

    def fuse_parts(self, parts: dict[str, PartFeatures], z: torch.Tensor,
                   z_hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each part's T1 tokens `(B, J_p, Tt, D)` attend to T2's output `(B, P, Tt, D)` -> `{part: (B, J_p, Tt, D)}`.

        One cross-attention for all parts (their queries side by side; queries never see each other).
        """
        B, _, _, D = z.shape
        shapes = [p.tokens.shape for p in parts.values()]
        queries = torch.cat([p.tokens.reshape(B, -1, D) for p in parts.values()], dim=1)   # (B, sum J_p*Tt, D)
        out = self.out_cross(queries, z.reshape(B, -1, D), z_hidden.reshape(B, -1))
        sizes = [shape[1] * shape[2] for shape in shapes]
        return {name: chunk.view(shape) for name, chunk, shape in zip(parts, out.split(sizes, dim=1), shapes)}
