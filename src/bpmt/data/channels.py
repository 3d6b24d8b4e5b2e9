"""Input channels derived from normalised keypoints, computed from *visible* coordinates only.

One implementation serves every path: training and test batches (`batches.collate`, where the
invisible entries are the padded frames) and masked pretraining (`pretrain`, where the masked
tokens' joints are invisible too). A derived value is kept only when every coordinate it is
computed from is visible; otherwise it is 0. So nothing computed from a masked coordinate reaches
the encoder: the first frame after a masked block has no velocity, a joint whose parent is masked
has no bone, a frame whose hips are masked has no `hip` channel, and a masked joint's own `xy`
and `conf` are 0 (the tokenizer replaces its token by the mask token anyway).

Channels, in the order asked for (`C` = `num_channels`):
xy (2) coordinates · conf (1) confidence · bone (2) joint - parent (`skeleton.PARENTS`) ·
vel1 (2) x_t - x_{t-1}, 0 in the first frame · vel2 (2) x_t - x_{t-2}, 0 in the first two ·
hip (2) joint - mid-hip.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..skeleton import LEFT_HIP, PARENTS, RIGHT_HIP

CHANNELS: dict[str, int] = {"xy": 2, "conf": 1, "bone": 2, "vel1": 2, "vel2": 2, "hip": 2}


def check_channels(channels: Sequence[str]) -> tuple[str, ...]:
    """The channel names as a tuple; ValueError for an empty, unknown or repeated name."""
    names = (channels,) if isinstance(channels, str) else tuple(channels)
    if not names:
        raise ValueError(f"no input channels given; choose from {', '.join(CHANNELS)}")
    for name in names:
        if name not in CHANNELS:
            raise ValueError(f"unknown input channel {name!r}; known: {', '.join(CHANNELS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"input channel listed twice in {list(names)}")
    return names


def num_channels(channels: Sequence[str]) -> int:
    """Width C of `derive_channels(..., channels)`."""
    return sum(CHANNELS[name] for name in check_channels(channels))


def _delay(xy: torch.Tensor, seen: torch.Tensor, lag: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t - x_{t-lag} `(B, T, J, 2)` and where both ends are visible `(B, T, J, 1)` (never in the
    first `lag` frames)."""
    diff, both = torch.zeros_like(xy), torch.zeros_like(seen)
    if xy.shape[1] > lag:
        diff[:, lag:] = xy[:, lag:] - xy[:, :-lag]
        both[:, lag:] = seen[:, lag:] * seen[:, :-lag]
    return diff, both


def derive_channels(keypoints: torch.Tensor, channels: Sequence[str],
                    visible: torch.Tensor | None = None) -> torch.Tensor:
    """keypoints `(B, T, 17, 3)` normalised x, y, conf; visible `(B, T, 17)` bool (default: all)
    -> features `(B, T, 17, C)`, every value computed from visible coordinates only (else 0)."""
    names = check_channels(channels)
    B, T, J, _ = keypoints.shape
    seen = (torch.ones(B, T, J, 1, dtype=keypoints.dtype, device=keypoints.device) if visible is None
            else visible[..., None].to(keypoints.dtype))                              # (B, T, 17, 1)
    xy = keypoints[..., :2] * seen                                                    # (B, T, 17, 2)
    parents = list(PARENTS)

    def bone() -> torch.Tensor:
        return (xy - xy[:, :, parents]) * seen * seen[:, :, parents]

    def velocity(lag: int) -> torch.Tensor:
        diff, both = _delay(xy, seen, lag)
        return diff * both

    def hip() -> torch.Tensor:
        hips_seen = seen[:, :, LEFT_HIP] * seen[:, :, RIGHT_HIP]                      # (B, T, 1)
        mid_hip = 0.5 * (xy[:, :, LEFT_HIP] + xy[:, :, RIGHT_HIP])                    # (B, T, 2)
        return (xy - mid_hip[:, :, None]) * seen * hips_seen[:, :, None]

    make = {
        "xy": lambda: xy,
        "conf": lambda: keypoints[..., 2:3] * seen,
        "bone": bone,
        "vel1": lambda: velocity(1),
        "vel2": lambda: velocity(2),
        "hip": hip,
    }
    return torch.cat([make[name]() for name in names], dim=-1)
