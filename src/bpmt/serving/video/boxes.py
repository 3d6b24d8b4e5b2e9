"""Box geometry for person detection and tracking: pure numpy functions.

A box is `(x1, y1, x2, y2)` in frame pixels, `x2 > x1`, `y2 > y1`; a set of boxes is `(N, 4)`.
"""

from __future__ import annotations

import numpy as np


def as_boxes(boxes: np.ndarray | list) -> np.ndarray:
    """`(N, 4)` float64 copy of `boxes` (accepts an empty list)."""
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return array.copy()


def box_area(boxes: np.ndarray) -> np.ndarray:
    """`(N, 4)` -> `(N,)` areas (0 for degenerate boxes)."""
    boxes = as_boxes(boxes)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every pair: `(N, 4)`, `(M, 4)` -> `(N, M)`."""
    a, b = as_boxes(a), as_boxes(b)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])             # (N, M)
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nested_fraction(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the smaller area of every pair: `(N, 4)`, `(M, 4)` -> `(N, M)`
    (1 when one box lies inside the other)."""
    a, b = as_boxes(a), as_boxes(b)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])             # (N, M)
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    smaller = np.minimum(box_area(a)[:, None], box_area(b)[None, :])
    return np.where(smaller > 0, inter / np.where(smaller > 0, smaller, 1.0), 0.0)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
                        nested_threshold: float = 0.5) -> np.ndarray:
    """Indices of the boxes kept, best score first. A box is dropped when it overlaps a better kept
    box with IoU above `iou_threshold`, or when more than `nested_threshold` of the smaller of the
    two lies inside the other: the detector also reports a walker's torso or legs as a smaller
    person, or a loose box around one or two walkers, both with lower scores."""
    boxes = as_boxes(boxes)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    kept: list[int] = []
    for i in order:
        if kept:
            one, others = boxes[i:i + 1], boxes[kept]
            if (box_iou(one, others) > iou_threshold).any() or (nested_fraction(one, others) > nested_threshold).any():
                continue
        kept.append(int(i))
    return np.asarray(kept, dtype=np.int64)


def box_around_keypoints(keypoints: np.ndarray, min_confidence: float = 0.5, min_points: int = 4) -> np.ndarray | None:
    """A person box in the detector's convention (height = 1.3 x the extent of the confident
    keypoints, width = half the height, centred on them) from `(J, 3)` x, y, confidence in frame
    pixels; None when fewer than `min_points` keypoints are confident."""
    confident = keypoints[keypoints[:, 2] >= min_confidence, :2]                # (K, 2)
    if len(confident) < min_points:
        return None
    low, high = confident.min(axis=0), confident.max(axis=0)
    height = max(float(high[1] - low[1]), float(high[0] - low[0]), 1.0) * 1.3
    cx, cy = (low + high) / 2
    return np.array([cx - height / 4, cy - height / 2, cx + height / 4, cy + height / 2])


def expand_boxes(boxes: np.ndarray, margin: float, width: int, height: int) -> np.ndarray:
    """Grow each box by `margin` x its width/height on every side, then clip it to the frame;
    returns whole-pixel `(N, 4)` int64 crop boxes (each at least 1 x 1 pixel)."""
    boxes = as_boxes(boxes)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    grown = boxes + np.stack([-w, -h, w, h], axis=1) * margin
    x1 = np.clip(np.floor(grown[:, 0]), 0, width - 1)
    y1 = np.clip(np.floor(grown[:, 1]), 0, height - 1)
    x2 = np.clip(np.ceil(grown[:, 2]), x1 + 1, width)
    y2 = np.clip(np.ceil(grown[:, 3]), y1 + 1, height)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.int64)
