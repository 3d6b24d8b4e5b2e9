"""Reading video files frame by frame with OpenCV; every failure is a `VideoError` naming the file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import VideoError
from .libs import import_cv2


@dataclass(frozen=True)
class VideoInfo:
    path: str
    frames: int | None     # as the container reports it (None when it does not say)
    fps: float
    width: int
    height: int


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Open `path`, decode its first frame and return its size, frame count and rate."""
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if not path.is_file():
        raise VideoError(f"{path}: not a file")
    if not os.access(path, os.R_OK):
        raise VideoError(f"{path}: not readable (permission denied)")
    cv2 = import_cv2()
    capture = _open(cv2, path)
    try:
        ok, frame = capture.read()
        if not ok or frame is None:
            raise VideoError(f"{path}: no frame could be decoded (not a video, or an unsupported codec)")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
    finally:
        capture.release()
    height, width = frame.shape[:2]
    return VideoInfo(str(path), count if count > 0 else None, fps if fps > 0 else 0.0, int(width), int(height))


def iter_frames(path: str | os.PathLike, max_frames: int | None = None,
                start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """`(frame index, BGR image (H, W, 3) uint8)` for frames `start`, `start + 1`, ... (at most
    `max_frames` of them; all if None). Earlier frames are decoded and skipped: seeking is not
    frame-exact in every container."""
    cv2 = import_cv2()
    capture = _open(cv2, Path(path))
    try:
        for _ in range(start):
            if not capture.grab():
                return
        index = start
        while max_frames is None or index < start + max_frames:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            yield index, frame
            index += 1
    finally:
        capture.release()


def _open(cv2, path: Path):
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise VideoError(f"{path}: cannot open as a video (not a video, or an unsupported format)")
    return capture
