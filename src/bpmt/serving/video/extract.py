"""Video -> one COCO-17 pose sequence per tracked person, in Gait3D's conventions.

One pass over the video, frames never held in memory. On each frame: detect people (HOG, on every
`detect_every`-th frame), update the IoU tracker, crop each tracked person's box plus a margin and
estimate the pose in the crop (MediaPipe, one estimator per track, in video mode); a found pose
confirms the track and moves its box onto the person, so a track follows its walker between the
detector's (frequent) misses.

Each kept track becomes a `Sequence` named `<subject>-camid<C>_videoid<V>-seq<K>` whose keypoints
are in crop pixels (like Gait3D's `human_crop` files), crop sizes are the crops' width and height,
and frame numbers are video frame indices; frames where no pose was found are left out (gaps, as
in Gait3D). Tracks with too few poses are dropped: detections of things that are not people.
With `single_person` there is no detection: the whole frame is the crop.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...data.sequence import Sequence
from ...errors import BPMTError
from ...text import plural
from .boxes import box_around_keypoints, expand_boxes
from .detect import PersonDetector
from .errors import VideoError
from .pose import PoseEstimator
from .reader import VideoInfo, iter_frames, probe_video
from .track import IoUTracker

SUBJECT = re.compile(r"[A-Za-z0-9_]+\Z")   # no "-": it separates the parts of a sequence name
AUTO_DETECT_SIDE = 960                      # frames larger than this are shrunk for detection


@dataclass(frozen=True)
class ExtractOptions:
    """Detector, tracker and pose settings (the defaults suit walking people filmed at 10-30 fps)."""

    detect_every: int = 1            # run the detector on every k-th frame only (faster)
    detect_scale: float | None = None  # resize frames by this before detection; None: shrink to <= 960 px
    min_score: float = 0.3           # HOG SVM margin below which a detection is dropped
    iou_threshold: float = 0.3       # least IoU linking a detection to a track
    max_gap_seconds: float = 0.7     # a track ends when neither detected nor posed for this long
    margin: float = 0.1              # crop = box grown by this fraction of its size on each side
    min_pose_fraction: float = 0.5   # drop tracks with a pose on fewer of their frames (false detections)
    min_pose_confidence: float = 0.5  # MediaPipe's person-detection threshold


@dataclass
class VideoReport:
    """What one extraction saw."""

    frames: int = 0                  # video frames read
    tracks: int = 0                  # tracks found (before filtering)
    kept: int = 0                    # tracks written as sequences
    pose_frames: int = 0             # frames with a pose, over the kept sequences
    dropped: dict[str, int] = field(default_factory=lambda: {"too short": 0, "too few poses": 0})

    def summary(self) -> str:
        text = (f"{plural(self.frames, 'frame')} read, {plural(self.tracks, 'track')} found, "
                f"{self.kept} kept with {plural(self.pose_frames, 'frame')} with a pose")
        dropped = ", ".join(f"{n} {why}" for why, n in self.dropped.items() if n)
        return text + (f" (dropped: {dropped})" if dropped else "")

    def to_dict(self) -> dict:
        return {"frames": self.frames, "tracks": self.tracks, "kept": self.kept, "pose_frames": self.pose_frames,
                "dropped": dict(self.dropped)}


def extraction_steps(video: VideoInfo | str | os.PathLike, max_frames: int | None = None,
                     start_frame: int = 0) -> int | None:
    """How many `progress` steps (frames) `extract_sequences` reports, for a progress bar's total;
    None when the video does not say how long it is. `video`: a path or `probe_video`'s result."""
    info = video if isinstance(video, VideoInfo) else probe_video(video)
    frames = None if info.frames is None else max(0, info.frames - start_frame)
    if max_frames is not None:
        frames = max_frames if frames is None else min(frames, max_frames)
    return frames


def extract_sequences(video_path: str | os.PathLike, *, subject: str = "unknown", camera: int | str = 0,
                      video: int | str = 0, min_frames: int = 20, max_frames: int | None = None,
                      start_frame: int = 0, single_person: bool = False, options: ExtractOptions = ExtractOptions(),
                      progress: Callable[[int], None] | None = None,
                      report: VideoReport | None = None) -> list[Sequence]:
    """Pose sequences of the people walking through a video, one per tracked person, ordered by
    first appearance (see the module docstring), from frame `start_frame` on (at most
    `max_frames` frames). `progress(n)` is told of `n` more frames done (`extraction_steps` gives
    the total); `report`, when given, is filled with counts."""
    camera, video = check_arguments(subject, camera, video, min_frames, max_frames, start_frame, options)
    report = report if report is not None else VideoReport()
    step = progress or (lambda n: None)
    info = probe_video(video_path)
    if single_person:
        frames, tracked = _whole_frame_poses(video_path, start_frame, max_frames, options, step)
    else:
        frames, tracked = _track_and_estimate(video_path, info, start_frame, max_frames, options, step)
    if frames == 0:
        raise VideoError(f"{video_path}: no frame at or after --start-frame {start_frame}"
                         + (f" (the video has {info.frames})" if info.frames else ""))
    report.frames, report.tracks = frames, len(tracked)

    sequences = []
    for track in tracked:
        if len(track.found) < min_frames:
            report.dropped["too short"] += 1
        elif len(track.found) < options.min_pose_fraction * track.length:
            report.dropped["too few poses"] += 1
        else:
            sequences.append(to_sequence(track.found, subject, camera, video, len(sequences)))
    report.kept = len(sequences)
    report.pose_frames = sum(len(s) for s in sequences)
    return sequences


def check_arguments(subject: str, camera: int | str, video: int | str, min_frames: int = 1,
                    max_frames: int | None = None, start_frame: int = 0,
                    options: ExtractOptions = ExtractOptions()) -> tuple[str, str]:
    """Raise `BPMTError` naming the first bad argument of `extract_sequences`; returns the camera
    and video numbers as strings."""
    if not SUBJECT.match(subject):
        raise BPMTError(f"--subject {subject!r}: use letters, digits and '_' only "
                        "('-' separates the parts of a sequence name)")
    names = []
    for flag, value in (("--camera", camera), ("--video-id", video)):
        if not str(value).isdigit():
            raise BPMTError(f"{flag} {value!r}: must be a non-negative integer (Gait3D's camid<C>_videoid<V>)")
        names.append(str(int(value)))
    for flag, value, least in (("--min-frames", min_frames, 1), ("--max-frames", max_frames, 1),
                               ("--start-frame", start_frame, 0), ("--detect-every", options.detect_every, 1)):
        if value is not None and value < least:
            raise BPMTError(f"{flag} {value}: must be at least {least}")
    if options.detect_scale is not None and options.detect_scale <= 0:
        raise BPMTError(f"--detect-scale {options.detect_scale}: must be positive")
    return names[0], names[1]


@dataclass
class _Tracked:
    """One track's poses: `(frame, keypoints (17, 3) in crop pixels, crop width, crop height)`."""

    first: int                       # first frame of the track
    last: int                        # last frame it was detected or posed (not its unseen tail)
    found: list[tuple[int, np.ndarray, int, int]] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.last - self.first + 1


def _track_and_estimate(video_path, info: VideoInfo, start: int, max_frames: int | None,
                        options: ExtractOptions, step: Callable[[int], None]) -> tuple[int, list[_Tracked]]:
    """Detect, track and estimate poses in one pass; returns (frames read, tracks by first frame)."""
    scale = options.detect_scale or min(1.0, AUTO_DETECT_SIDE / max(info.width, info.height))
    detector = PersonDetector(scale=scale, min_score=options.min_score)
    max_gap = max(round(options.max_gap_seconds * (info.fps or 25.0)), 2 * options.detect_every)
    tracker = IoUTracker(options.iou_threshold, max_gap)
    estimators: dict[int, PoseEstimator] = {}
    tracked: dict[int, _Tracked] = {}

    def release(ids: list[int]) -> None:
        for track_id in ids:
            if track_id in estimators:
                estimators.pop(track_id).close()

    frames = 0
    try:
        for index, image in iter_frames(video_path, max_frames, start):
            run_detector = (index - start) % options.detect_every == 0
            active = tracker.update(index, detector(image)[:, :4] if run_detector else None)
            release(tracker.ended)
            crops = expand_boxes(np.stack([t.box for t in active]) if active else np.zeros((0, 4)),
                                 options.margin, info.width, info.height)                       # (N, 4) int
            for track, (x1, y1, x2, y2) in zip(active, crops.tolist()):
                if track.id not in estimators:
                    estimators[track.id] = PoseEstimator(video_mode=True,
                                                         min_detection_confidence=options.min_pose_confidence)
                    tracked[track.id] = _Tracked(first=index, last=index)
                keypoints = estimators[track.id](image[y1:y2, x1:x2])
                if track.detected or keypoints is not None:
                    tracked[track.id].last = index
                if keypoints is None:
                    continue
                tracked[track.id].found.append((index, keypoints, x2 - x1, y2 - y1))
                in_frame = keypoints.copy()
                in_frame[:, :2] += (x1, y1)
                box = box_around_keypoints(in_frame)
                if box is not None and any(t.id == track.id for t in tracker.tracks):
                    tracker.confirm(track.id, index, box)
            release(tracker.ended)
            frames += 1
            step(1)
    finally:
        release(list(estimators))
    return frames, [tracked[k] for k in sorted(tracked)]


def _whole_frame_poses(video_path, start: int, max_frames: int | None, options: ExtractOptions,
                       step: Callable[[int], None]) -> tuple[int, list[_Tracked]]:
    """One person filling the frame: the whole frame is the crop. Returns (frames read, [the track])."""
    track = _Tracked(first=start, last=start - 1)
    with PoseEstimator(video_mode=True, min_detection_confidence=options.min_pose_confidence) as estimator:
        for index, image in iter_frames(video_path, max_frames, start):
            keypoints = estimator(image)
            if keypoints is not None:
                track.found.append((index, keypoints, image.shape[1], image.shape[0]))
            track.last = index
            step(1)
    return track.length, [track] if track.length else []


def to_sequence(found: list[tuple], subject: str, camera: str, video: str, index: int) -> Sequence:
    """The sequence `<subject>-camid<C>_videoid<V>-seq<index>` of one track's poses `found`: a list of
    `(frame, keypoints (17, 3) in crop pixels, crop width, crop height)`, frames ascending."""
    camera_video = f"camid{camera}_videoid{video}"
    return Sequence(
        name=f"{subject}-{camera_video}-seq{index}",
        subject=subject,
        camera=camera,
        video=video,
        frames=np.array([f for f, _, _, _ in found], dtype=np.int64),                   # (T,)
        keypoints=np.stack([k for _, k, _, _ in found]).astype(np.float32),            # (T, 17, 3)
        crop_sizes=np.array([(w, h) for _, _, w, h in found], dtype=np.float32),       # (T, 2)
    )
