"""Pose estimation on one person's image: MediaPipe Pose (BlazePose, 33 landmarks) -> COCO-17.

MediaPipe finds one person per image, so it runs on a crop around each tracked person. One
estimator per track, in video mode: MediaPipe then follows the person from crop to crop instead of
searching each crop afresh (faster and steadier).
"""

from __future__ import annotations

import numpy as np

from ...skeleton import NUM_JOINTS
from .libs import import_cv2, import_mediapipe_pose

# BlazePose landmark of each COCO-17 joint: nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles.
MEDIAPIPE_TO_COCO = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
MEDIAPIPE_LANDMARKS = 33


def landmarks_to_coco(landmarks: np.ndarray, width: float, height: float) -> np.ndarray:
    """`(33, 3)` normalised x, y, visibility -> `(17, 3)` float32 x, y in pixels of a `width` x
    `height` image, confidence = visibility clipped to [0, 1]."""
    if landmarks.shape != (MEDIAPIPE_LANDMARKS, 3):
        raise ValueError(f"expected (33, 3) landmarks, got {landmarks.shape}")
    coco = landmarks[list(MEDIAPIPE_TO_COCO)].astype(np.float64)    # (17, 3)
    coco[:, 0] *= width
    coco[:, 1] *= height
    coco[:, 2] = np.clip(coco[:, 2], 0.0, 1.0)
    assert coco.shape == (NUM_JOINTS, 3)
    return coco.astype(np.float32)


class PoseEstimator:
    """`estimator(image_bgr)` -> `(17, 3)` keypoints in that image's pixels, or None (no person).

    Use as a context manager (or call `close()`): each estimator holds a MediaPipe graph.
    """

    def __init__(self, video_mode: bool = True, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5) -> None:
        pose = import_mediapipe_pose()
        self.cv2 = import_cv2()
        # model_complexity=1: the full model, whose weights ship inside the 0.10.21 wheel.
        self.graph = pose.Pose(static_image_mode=not video_mode, model_complexity=1, smooth_landmarks=True,
                               enable_segmentation=False, min_detection_confidence=min_detection_confidence,
                               min_tracking_confidence=min_tracking_confidence)

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """`image`: BGR `(H, W, 3)` uint8."""
        height, width = image.shape[:2]
        rgb = np.ascontiguousarray(self.cv2.cvtColor(image, self.cv2.COLOR_BGR2RGB))
        result = self.graph.process(rgb)
        if result.pose_landmarks is None:
            return None
        landmarks = np.array([(p.x, p.y, p.visibility) for p in result.pose_landmarks.landmark])  # (33, 3)
        return landmarks_to_coco(landmarks, width, height)

    def close(self) -> None:
        self.graph.close()

    def __enter__(self) -> "PoseEstimator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
