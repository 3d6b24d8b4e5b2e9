"""A pose sequence, and the plausibility rule every reader applies to its keypoints.

Plausibility rule (frame files, pose pickles, pose JSON and pose-estimator imports alike): every
value is a finite number with |value| <= 1e6 (a pixel coordinate beyond a million, or one that
would overflow float32, is damage, not a pose). Confidences may be negative (heatmap-based
detectors report scores <= 0 for unseen joints).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..skeleton import JOINT_NAMES

MAX_ABS_VALUE = 1e6


@dataclass
class Sequence:
    """One walking sequence. `keypoints` is `(T, 17, 3)` = x, y, confidence in crop pixels."""

    name: str
    subject: str
    camera: str
    video: str
    frames: np.ndarray        # (T,) int64 frame numbers, ascending, gaps preserved
    keypoints: np.ndarray     # (T, 17, 3) float32
    crop_sizes: np.ndarray    # (T, 2) float32 crop width, height

    def __len__(self) -> int:
        return len(self.frames)


def check_keypoints(keypoints: np.ndarray, where: str) -> None:
    """Raise DataError naming `where`, the frame and the joint unless every value of `(T, 17, 3)`
    keypoints is finite with |value| <= 1e6 (check before casting to float32, which would turn a
    huge value into inf)."""
    bad = ~np.isfinite(keypoints)
    what = "is not finite"
    if not bad.any():
        bad = np.abs(keypoints) > MAX_ABS_VALUE
        what = f"is implausible (|value| must not exceed {MAX_ABS_VALUE:g})"
    if bad.any():
        t, j, c = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{where}: frame {t}, joint {j} ({JOINT_NAMES[j]}): {'xy'[c] if c < 2 else 'confidence'} "
                        f"{what} ({keypoints[t, j, c]:g})")
