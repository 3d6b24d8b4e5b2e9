"""COCO-17 skeleton knowledge: joint names, bones, the left/right flip, and body-part partitions.

Every other module asks this one; no joint table is written down twice in the project.
A *partition* maps part names to joint indices; each part is one BPMT modality.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

import numpy as np

JOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_JOINTS = len(JOINT_NAMES)

# Parent of each joint as GPGait uses it for bones (nose's parent is the left shoulder).
PARENTS: tuple[int, ...] = (5, 0, 0, 1, 2, 0, 0, 5, 6, 7, 8, 5, 6, 11, 12, 13, 14)

# Joint index that each joint becomes after a left/right mirror.
FLIP_PERMUTATION: tuple[int, ...] = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)

# The 12 limb segments whose lengths describe body proportions.
LIMBS: tuple[tuple[int, int], ...] = (
    (5, 6), (11, 12), (5, 11), (6, 12),          # shoulder width, hip width, flanks
    (5, 7), (7, 9), (6, 8), (8, 10),             # arms
    (11, 13), (13, 15), (12, 14), (14, 16),      # legs
)

LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_HIP, RIGHT_HIP = 5, 6, 11, 12

Partition = Mapping[str, tuple[int, ...]]


def _frozen(parts: dict[str, tuple[int, ...]]) -> Partition:
    return MappingProxyType(parts)


# The seed's partition: the head and the trunk's four corners form the torso.
DEFAULT_PARTITION: Partition = _frozen({
    "torso": (0, 1, 2, 3, 4, 5, 6, 11, 12),
    "left_arm": (7, 9),
    "right_arm": (8, 10),
    "left_leg": (13, 15),
    "right_leg": (14, 16),
})

# GPGait-style limbs: shoulders belong to the arms and hips to the legs.
LIMB_ROOTS_PARTITION: Partition = _frozen({
    "head": (0, 1, 2, 3, 4),
    "left_arm": (5, 7, 9),
    "right_arm": (6, 8, 10),
    "left_leg": (11, 13, 15),
    "right_leg": (12, 14, 16),
})

# The whole body as a single modality (the single-modality baseline).
WHOLE_BODY_PARTITION: Partition = _frozen({"body": tuple(range(NUM_JOINTS))})

PARTITIONS: Mapping[str, Partition] = MappingProxyType({
    "default": DEFAULT_PARTITION,
    "limb_roots": LIMB_ROOTS_PARTITION,
    "whole_body": WHOLE_BODY_PARTITION,
})


def get_partition(name: str) -> Partition:
    """Return the named partition; raise ValueError listing the known names otherwise."""
    try:
        return PARTITIONS[name]
    except KeyError:
        raise ValueError(f"unknown body-part partition {name!r}; known: {', '.join(PARTITIONS)}") from None


def validate_partition(partition: Partition) -> None:
    """Raise ValueError unless every COCO joint lies in exactly one part."""
    seen: dict[int, str] = {}
    for part, joints in partition.items():
        if not joints:
            raise ValueError(f"part {part!r} has no joints")
        for j in joints:
            if not 0 <= j < NUM_JOINTS:
                raise ValueError(f"part {part!r} names joint {j}, outside 0..{NUM_JOINTS - 1}")
            if j in seen:
                raise ValueError(f"joint {j} ({JOINT_NAMES[j]}) is in both {seen[j]!r} and {part!r}")
            seen[j] = part
    missing = sorted(set(range(NUM_JOINTS)) - set(seen))
    if missing:
        raise ValueError(f"joints {missing} belong to no part")


def split_parts(keypoints, partition: Partition = DEFAULT_PARTITION) -> dict:
    """Split `(..., J, C)` keypoints into `{part: (..., J_p, C)}` (numpy or torch alike)."""
    return {part: keypoints[..., list(joints), :] for part, joints in partition.items()}


def flip_keypoints(keypoints: np.ndarray, width: float | np.ndarray = 0.0) -> np.ndarray:
    """Mirror `(..., 17, C)` keypoints left/right: x -> width - x and swap left/right joints.

    With `width=0` the x axis is simply negated, which suits centred coordinates.
    """
    flipped = keypoints[..., list(FLIP_PERMUTATION), :].copy()
    flipped[..., 0] = width - flipped[..., 0]
    return flipped


def part_colors(partition: Partition) -> dict[str, str]:
    """A stable colour per part, for drawings."""
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"]
    return {part: palette[i % len(palette)] for i, part in enumerate(partition)}
