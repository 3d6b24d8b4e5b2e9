"""Token masks for masked pretraining. Convention (MAE's): True = masked out (removed).

Pure functions of an explicit `torch.Generator`. Each sample keeps at least one visible token.
"""

from __future__ import annotations

import torch

from ..skeleton import NUM_JOINTS


def random_mask(batch: int, joints: int, steps: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Mask `round(ratio * joints * steps)` random (joint, time-step) tokens per sample -> `(B, J, Tt)`."""
    n = joints * steps
    masked = min(n - 1, max(1, round(ratio * n)))
    order = torch.rand(batch, n, generator=generator).argsort(dim=1)
    mask = torch.zeros(batch, n, dtype=torch.bool)
    mask.scatter_(1, order[:, :masked], True)
    return mask.view(batch, joints, steps)


def tube_mask(batch: int, joints: int, steps: int, ratio: float, generator: torch.Generator,
              block: int = 2) -> torch.Tensor:
    """Mask whole time steps (all joints of the part: a "tube") in blocks of `block` steps.

    About `ratio` of the time steps are masked -> `(B, J, Tt)`.
    """
    target = min(steps - 1, max(1, round(ratio * steps)))
    blocks = (steps + block - 1) // block
    masked_blocks = min(blocks - 1, max(1, round(target / block))) if blocks > 1 else 0
    order = torch.rand(batch, blocks, generator=generator).argsort(dim=1)
    block_mask = torch.zeros(batch, blocks, dtype=torch.bool)
    block_mask.scatter_(1, order[:, :masked_blocks], True)
    step_mask = block_mask.repeat_interleave(block, dim=1)[:, :steps]                 # (B, Tt)
    if blocks <= 1:  # too short for blocks: mask single steps instead
        step_mask = random_mask(batch, 1, steps, ratio, generator)[:, 0]
    return step_mask[:, None, :].expand(batch, joints, steps).clone()


MASKS = {"random": random_mask, "tube": tube_mask}


def make_mask(kind: str, batch: int, joints: int, steps: int, ratio: float,
              generator: torch.Generator) -> torch.Tensor:
    if kind not in MASKS:
        raise ValueError(f"unknown mask type {kind!r} (known: {', '.join(MASKS)})")
    return MASKS[kind](batch, joints, steps, ratio, generator)


def visible_joints(padding_mask: torch.Tensor, token_masks: dict[str, torch.Tensor],
                   joints: dict[str, list[int]], frames_per_token: int) -> torch.Tensor:
    """Which coordinates the encoder may see: padding_mask `(B, T)`, token_masks `{part: (B, J_p, Tt)}`
    True = masked out -> `(B, T, 17)` True = visible (a real frame, and not under a masked token)."""
    B, T = padding_mask.shape
    visible = (~padding_mask)[:, :, None].repeat(1, 1, NUM_JOINTS)                    # (B, T, 17)
    for part, mask in token_masks.items():
        frames = mask.repeat_interleave(frames_per_token, dim=2).transpose(1, 2)      # (B, T, J_p)
        visible[:, :, joints[part]] &= ~frames
    return visible
