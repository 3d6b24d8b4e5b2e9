"""Person detection: OpenCV's HOG + linear SVM pedestrian detector (ships with OpenCV, no download).

The detector's window is 64 x 128 pixels with the person about 96 pixels tall inside it, so it
finds people from about 90 pixels tall at `scale=1`; `scale > 1` enlarges the frame first to find
smaller people (slower), `scale < 1` shrinks large frames (faster). Its boxes include the window's
margin around the person.
"""

from __future__ import annotations

import numpy as np

from .boxes import non_max_suppression
from .libs import import_cv2


class PersonDetector:
    """`detector(frame)` -> `(N, 5)` boxes `x1, y1, x2, y2, score` in frame pixels, best first."""

    def __init__(self, scale: float = 1.0, min_score: float = 0.3, nms_iou: float = 0.4,
                 scale_step: float = 1.05) -> None:
        if scale <= 0:
            raise ValueError(f"detection scale must be positive, got {scale}")
        self.cv2 = import_cv2()
        self.hog = self.cv2.HOGDescriptor()
        self.hog.setSVMDetector(self.cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.scale, self.min_score, self.nms_iou, self.scale_step = scale, min_score, nms_iou, scale_step

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """`frame`: BGR `(H, W, 3)` uint8."""
        image = frame
        if self.scale != 1.0:
            image = self.cv2.resize(frame, None, fx=self.scale, fy=self.scale, interpolation=self.cv2.INTER_LINEAR)
        rects, weights = self.hog.detectMultiScale(image, winStride=(8, 8), padding=(8, 8), scale=self.scale_step)
        if len(rects) == 0:
            return np.zeros((0, 5))
        rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4) / self.scale   # (N, 4) x, y, w, h
        scores = np.asarray(weights, dtype=np.float64).reshape(-1)
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)  # (N, 4) x1, y1, x2, y2
        confident = scores >= self.min_score
        boxes, scores = boxes[confident], scores[confident]
        keep = non_max_suppression(boxes, scores, self.nms_iou)
        return np.concatenate([boxes[keep], scores[keep, None]], axis=1)
