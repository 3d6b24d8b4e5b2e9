"""Pure numpy transforms of one sequence's keypoints: normalisation, input channels, augmentations.

Every function takes `(T, 17, 3)` keypoints = x, y, confidence and returns a new array; the random
ones take an explicit `rng: np.random.Generator`, so a seeded generator gives the same output.

Coordinate convention after `normalize`: origin at the neck (mid-point of the shoulders), one unit =
one torso length (neck -> mid-hip), and the image's y axis is kept, so y grows *downward*: with
`rotate=True` the mid-hip sits at (0, +1) in every frame. Augmentations expect normalised input
(they flip, rotate and scale about the origin).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..skeleton import LEFT_HIP, LEFT_SHOULDER, RIGHT_HIP, RIGHT_SHOULDER, Partition, flip_keypoints
from .channels import CHANNELS, derive_channels, num_channels  # noqa: F401 - re-exported

# A torso shorter than this (in input units) is treated as missing: its frame borrows the scale.
_MIN_TORSO = 1e-6


# ---------------------------------------------------------------------------------------------
# Normalisation


def _neck_and_hip(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(T, 17, 2)` -> neck `(T, 2)`, mid-hip `(T, 2)`."""
    neck = 0.5 * (xy[:, LEFT_SHOULDER] + xy[:, RIGHT_SHOULDER])
    hip = 0.5 * (xy[:, LEFT_HIP] + xy[:, RIGHT_HIP])
    return neck, hip


def _clean_points(keypoints: np.ndarray) -> np.ndarray:
    """`(T, 17, 3)` as float64, non-finite joints zeroed (treated as missing)."""
    points = np.asarray(keypoints, dtype=np.float64).copy()
    points[~np.isfinite(points).all(axis=-1)] = 0.0
    return points


def _spine(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`(T, 17, 2)` -> neck `(T, 2)`, spine neck -> mid-hip `(T, 2)`, torso length `(T,)`, usable `(T,)`."""
    neck, hip = _neck_and_hip(xy)
    spine = hip - neck
    torso = np.hypot(spine[:, 0], spine[:, 1])
    return neck, spine, torso, np.isfinite(torso) & (torso > _MIN_TORSO)


def reference_torso_length(keypoints: np.ndarray) -> float:
    """The median torso length of a `(T, 17, 3)` sequence over its usable frames (1 when none):
    `normalize`'s per-sequence scale. Frames normalised one window at a time with
    `normalize(window, torso_length=reference_torso_length(whole))` equal the whole sequence's."""
    _, _, torso, valid = _spine(_clean_points(keypoints)[..., :2])
    return _median_torso(torso, valid)


def _median_torso(torso: np.ndarray, valid: np.ndarray) -> float:
    return float(np.median(torso[valid])) if valid.any() else 1.0


def normalize(keypoints: np.ndarray, rotate: bool = False, scale: str = "sequence",
              torso_length: float | None = None, center: str = "frame", origin: str = "neck") -> np.ndarray:
    """Centre each frame on the neck (or mid-hip) and scale torso length to 1; optionally make the
    spine vertical.

    keypoints: `(T, 17, 3)` x, y, conf in any pixel frame (y down). Returns `(T, 17, 3)` float32.
    scale="sequence": divide by the median torso length over the frames (keeps the within-sequence
    breathing of the body's size, robust to a few bad frames); scale="frame": each frame by its own.
    rotate=True: rotate each frame about the neck so that neck -> mid-hip points along +y
    (GPGait's human-oriented transformation).
    Non-finite joints are treated as missing (x = y = conf = 0). Frames whose torso length is zero
    or non-finite use the sequence's median torso length (or 1 when no frame has one) and are not
    rotated, so the output never holds NaN or inf.
    torso_length: the sequence's `reference_torso_length`, when `keypoints` are only some of its
    frames (every frame is normalised on its own apart from this one number).
    center="frame": every frame's own neck is the origin (the body's motion in the crop is lost);
    center="clip": one origin for all the given frames, their mean neck, so that the bounce and
    sway of the body in the crop stay in the coordinates (and in the velocities). With "clip" the
    result depends on which frames are given (a window is centred on its own mean), and `rotate`
    is not supported.
    origin="neck" (default) or "hip": the point `center` puts at 0, the neck or the mid-hip (the
    plain reference transformer's origin); the spine's rotation is the same about either.
    """
    if keypoints.ndim != 3 or keypoints.shape[1:] != (17, 3):
        raise ValueError(f"expected (T, 17, 3) keypoints, got shape {keypoints.shape}")
    if scale not in ("sequence", "frame"):
        raise ValueError(f"scale must be 'sequence' or 'frame', not {scale!r}")
    if center not in ("frame", "clip"):
        raise ValueError(f"center must be 'frame' or 'clip', not {center!r}")
    if origin not in ("neck", "hip"):
        raise ValueError(f"origin must be 'neck' or 'hip', not {origin!r}")
    if center == "clip" and rotate:
        raise ValueError("center='clip' cannot be combined with rotate=True (rotation is about each frame's neck)")
    points = _clean_points(keypoints)
    xy = points[..., :2]                                              # (T, 17, 2) view

    neck, spine, torso, valid = _spine(xy)                            # (T, 2), (T, 2), (T,), (T,)
    fallback = _median_torso(torso, valid) if torso_length is None else float(torso_length)
    if scale == "sequence":
        lengths = np.full(len(points), fallback)
    else:
        lengths = np.where(valid, torso, fallback)

    anchor = neck if origin == "neck" else neck + spine                  # (T, 2); the mid-hip = neck + spine
    if center == "frame":
        xy -= anchor[:, None, :]
    else:
        xy -= anchor[valid].mean(axis=0) if valid.any() else np.zeros(2)
    if rotate:
        # Rotation by phi maps (sin phi, cos phi) onto (0, 1): phi is the spine's angle from +y.
        safe = np.where(valid, torso, 1.0)
        sin = np.where(valid, spine[:, 0] / safe, 0.0)[:, None]      # (T, 1)
        cos = np.where(valid, spine[:, 1] / safe, 1.0)[:, None]
        x, y = xy[..., 0].copy(), xy[..., 1].copy()                  # both read before either is written
        xy[..., 0] = cos * x - sin * y
        xy[..., 1] = sin * x + cos * y
    xy /= lengths[:, None, None]
    return points.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Input channels

def feature_channels(normalized: np.ndarray, channels: Sequence[str]) -> np.ndarray:
    """The named input channels of one whole normalised sequence `(T, 17, 3)` -> `(T, 17, C)` float32
    (`channels.derive_channels` with every frame visible; C = `num_channels(channels)`)."""
    keypoints = torch.from_numpy(np.ascontiguousarray(normalized, dtype=np.float32))[None]
    return derive_channels(keypoints, channels)[0].numpy()


# ---------------------------------------------------------------------------------------------
# Augmentations (normalised keypoints in, new array out)


def _rotate_xy(keypoints: np.ndarray, angle: float) -> np.ndarray:
    out = keypoints.copy()
    cos, sin = math.cos(angle), math.sin(angle)
    x, y = keypoints[..., 0], keypoints[..., 1]
    out[..., 0] = cos * x - sin * y
    out[..., 1] = sin * x + cos * y
    return out


def random_flip(keypoints: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """With probability p mirror `(T, 17, C)` centred keypoints left/right (`skeleton.flip_keypoints`)."""
    if rng.random() < p:
        return flip_keypoints(keypoints)
    return keypoints.copy()


def random_rotation(keypoints: np.ndarray, rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    """Rotate every frame about the origin by one angle drawn from [-max_degrees, max_degrees]."""
    angle = math.radians(rng.uniform(-max_degrees, max_degrees))
    return _rotate_xy(keypoints, angle)


def random_scale(keypoints: np.ndarray, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """Multiply x, y by one factor drawn from [low, high]."""
    if not 0 < low <= high:
        raise ValueError(f"scale range must satisfy 0 < low <= high, got [{low}, {high}]")
    out = keypoints.copy()
    out[..., :2] *= rng.uniform(low, high)
    return out


def joint_noise(keypoints: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
    """Add independent Gaussian noise of standard deviation `std` to every x and y."""
    out = keypoints.copy()
    out[..., :2] += rng.normal(0.0, std, size=out[..., :2].shape).astype(out.dtype)
    return out


def mask_part(keypoints: np.ndarray, rng: np.random.Generator, partition: Partition, p: float) -> np.ndarray:
    """With probability p zero (x, y and conf) one randomly chosen part in all frames (Part-Mask)."""
    out = keypoints.copy()
    if rng.random() < p:
        parts = list(partition)
        joints = list(partition[parts[rng.integers(len(parts))]])
        out[:, joints] = 0
    return out


def temporal_crop(length_total: int, clip_len: int, rng: np.random.Generator) -> np.ndarray:
    """Indices `(clip_len,)` of a random contiguous window of a `length_total`-frame sequence.

    A sequence shorter than the clip is repeated end to end first (as OpenGait does), and the
    window is drawn from the repetition.
    """
    if length_total < 1 or clip_len < 1:
        raise ValueError(f"need length_total >= 1 and clip_len >= 1, got {length_total}, {clip_len}")
    repeats = -(-clip_len // length_total)
    cycled = np.arange(length_total * repeats) % length_total
    start = int(rng.integers(len(cycled) - clip_len + 1))
    return cycled[start:start + clip_len]


def temporal_resample(keypoints: np.ndarray, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """Change walking speed: linearly resample the T frames to round(T * factor) >= 2 frames,
    factor drawn from [low, high] (factor < 1 = faster walking, fewer frames)."""
    before, after, weight = resample_positions(len(keypoints), rng, low, high)
    weight = weight.astype(keypoints.dtype)[:, None, None]
    return keypoints[before] * (1 - weight) + keypoints[after] * weight


def resample_positions(length: int, rng: np.random.Generator, low: float,
                       high: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`temporal_resample`'s draw: output frame i = (1 - weight[i]) * before[i] + weight[i] * after[i],
    all `(T',)` (frame indices, float64 weights). Lets a caller read only the frames it keeps."""
    if not 0 < low <= high:
        raise ValueError(f"speed range must satisfy 0 < low <= high, got [{low}, {high}]")
    if length == 0:
        raise ValueError("cannot resample an empty sequence")
    new_length = max(2, round(length * rng.uniform(low, high)))
    position = np.linspace(0.0, length - 1, new_length)              # (T',)
    before = np.floor(position).astype(np.int64)
    after = np.minimum(before + 1, length - 1)
    return before, after, position - before


# ---------------------------------------------------------------------------------------------
# Test time


def chunk_indices(length: int, max_len: int) -> list[np.ndarray]:
    """Split `range(length)` into ceil(length / max_len) contiguous chunks of near-equal size."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if length <= 0:
        return []
    return np.array_split(np.arange(length), -(-length // max_len))
