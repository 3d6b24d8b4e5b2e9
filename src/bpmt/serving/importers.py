"""Pose-estimator output -> pose sequences in Gait3D's native layout (`bpmt import FORMAT SRC`).

    read (one format) -> detections per frame, image pixels -> IoU tracker -> crop -> Sequence per track

Accepted inputs (COCO-17 joints in the end; every other shape is an error naming the file and field):

* `alphapose`: AlphaPose's results JSON, a list of detections `{"image_id", "keypoints", "score",
  "box"}` (other keys, e.g. "idx", "category_id", are ignored): `keypoints` 51 numbers = 17 x
  (x, y, score) in COCO-17 order, `box` `[x, y, w, h]`, `image_id` a frame number or an image file
  name whose last group of digits is the frame number ("000123.jpg" -> 123, "0.jpg" -> 0).
* `openpose`: a folder of OpenPose's per-frame files `<name>_<frame>_keypoints.json`, each
  `{"people": [{"pose_keypoints_2d": [...]}, ...]}`; BODY_25 (75 numbers) or COCO-18 (54 numbers),
  told apart by the length (BODY_25B, also 75 numbers, cannot be and is not supported). Other files
  in the folder are ignored (counted).
* `mmpose`: MMPose / RTMPose predictions with COCO-17 instances `{"keypoints": [[x, y] x 17],
  "keypoint_scores": [17 numbers], "bbox": [x1, y1, x2, y2] or [[x1, y1, x2, y2]], "bbox_score"}`
  ("bbox" and "bbox_score" optional) in one of three shapes:
  1. a list of frames, each a list of instances (frame number = position in the list);
  2. a list of `{"frame_id": n, "instances": [...]}` (`MMPoseInferencer(...)(video, pred_out_dir=...)`);
  3. `{"instance_info": [{"frame_id": n, "instances": [...]}], "meta_info": ...}`
     (`demo/topdown_demo_with_mmdet.py --save-predictions`).

Conventions: a keypoint `(0, 0, 0)` is a missing joint and stays `(0, 0, 0)` in the output. A
detection's box is the format's box, or (OpenPose, MMPose without "bbox") the box the video path
draws around the pose (`boxes.box_around_keypoints`: at least 4 joints with confidence >= 0.5,
otherwise the detection is dropped). Its score, compared with `min_score`: AlphaPose's "score",
MMPose's "bbox_score", else the mean confidence of its present joints. Frame numbers must be unique
per image (two image names giving one number is an error: two videos mixed in one input).
Confidences are written as the estimator gave them (RTMPose's keypoint scores may exceed 1). In
messages, detections, persons, instances and items are counted from 0, as in the JSON lists.

Tracking and cropping are the video path's (`bpmt poses`): the IoU tracker of `video/track.py` (a
track ends after `max_gap` frames without a detection; a detection lying mostly inside a tracked
person's box starts no track and is dropped), the crop of `video/boxes.expand_boxes` (the box grown
by the video path's margin, whole pixels; the frame size is unknown, so crops are clipped at the
frame's top and left edges only); each track with at least `min_frames` frames becomes one sequence
`<ID>-camid<C>_videoid<V>-seq<K>`, K counting kept tracks in order of first appearance, keypoints in
crop pixels, frame numbers the input's.

This module lives in serving/ beside the video feature whose tracker and writer it uses, so that
data/ never imports serving/.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.gait3d import CAMERA_VIDEO
from ..data.pose_json import json_kind
from ..data.sequence import MAX_ABS_VALUE, Sequence
from ..errors import BPMTError, DataError
from ..skeleton import NUM_JOINTS
from ..text import plural
from .video.boxes import box_around_keypoints, expand_boxes
from .video.extract import SUBJECT, ExtractOptions, to_sequence
from .video.track import IoUTracker

DEFAULT_MIN_FRAMES = 20            # as `bpmt poses`
NO_FRAME_EDGE = 10 ** 7            # stands for the unknown frame width and height: > any plausible box

# COCO-17 joint (nose, left/right eye, left/right ear, shoulders, elbows, wrists, hips, knees, ankles;
# the order of `skeleton.JOINT_NAMES`) -> index in OpenPose's output, from OpenPose's documentation
# "doc/02_output.md" (sections "Pose Output Format (BODY_25)" and "(COCO)").
OPENPOSE_TO_COCO: dict[str, tuple[int, ...]] = {
    "BODY_25": (0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11),
    "COCO-18": (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10),
}
OPENPOSE_JOINTS = {"BODY_25": 25, "COCO-18": 18}
OPENPOSE_FILE = re.compile(r"([0-9]+)_keypoints\.json\Z")
DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Detection:
    """One person on one frame, in image pixels."""

    keypoints: np.ndarray        # (17, 3) x, y, confidence; (0, 0, 0) = missing joint
    box: np.ndarray | None       # (4,) x1, y1, x2, y2; None when the format gives none
    score: float | None          # the format's detection score; None when it has none

    def detection_score(self) -> float:
        """The score compared with `min_score` (see the module docstring)."""
        if self.score is not None:
            return self.score
        present = ~missing_joints(self.keypoints)
        return float(self.keypoints[present, 2].mean()) if present.any() else 0.0


Frames = dict[int, list[Detection]]   # frame number -> the detections on it


@dataclass
class ImportReport:
    """What one import saw."""

    frames: int = 0                  # frames in the input (with or without detections)
    detections: int = 0              # detections read
    tracks: int = 0                  # tracks found (before filtering)
    kept: int = 0                    # tracks written as sequences
    pose_frames: int = 0             # frames over the kept sequences
    ignored_files: int = 0           # OpenPose: files in the folder that are not `*_keypoints.json`
    dropped: dict[str, int] = field(default_factory=lambda: {   # "<noun> <why>": count
        "detection below --min-score": 0, "detection without 4 joints of confidence >= 0.5": 0,
        "detection not tracked": 0, "track too short": 0})

    def summary(self) -> str:
        text = (f"{plural(self.frames, 'frame')}, {plural(self.detections, 'detection')}, "
                f"{plural(self.tracks, 'track')} found, {self.kept} kept with {plural(self.pose_frames, 'frame')}")
        dropped = ", ".join(f"{n} {why.replace(' ', 's ' if n != 1 else ' ', 1)}"
                            for why, n in self.dropped.items() if n)
        text += f" (dropped: {dropped})" if dropped else ""
        return text + (f"; {self.ignored_files} other files ignored" if self.ignored_files else "")


# ---------------------------------------------------------------------------------------------
# The whole import


def import_poses(fmt: str, src: str | os.PathLike, *, subject: str, camera_video: str = "camid0_videoid0",
                 min_frames: int = DEFAULT_MIN_FRAMES, min_score: float | None = None, max_gap: int | None = None,
                 report: ImportReport | None = None) -> list[Sequence]:
    """Pose sequences, one per tracked person, from pose-estimator output `src` in format `fmt`
    (see the module docstring), ordered by first appearance; `report`, when given, is filled with
    counts. Raises DataError naming the file and field of the first malformed input, BPMTError for
    a bad argument."""
    camera, video = check_import_arguments(subject, camera_video, min_frames, min_score, max_gap)
    if fmt not in READERS:
        raise BPMTError(f"unknown format {fmt!r} (supported: {', '.join(READERS)})")
    report = report if report is not None else ImportReport()
    frames = READERS[fmt](Path(src), report)
    report.frames = len(frames)
    report.detections = sum(len(d) for d in frames.values())
    if report.detections == 0:
        raise DataError(f"{src}: no person detected on any of its {plural(len(frames), 'frame')}")
    tracks = track_detections(with_boxes(frames, min_score, report), max_gap, report)
    report.tracks = len(tracks)
    sequences = []
    for track in tracks:
        if len(track) < min_frames:
            report.dropped["track too short"] += 1
            continue
        found = [(frame, *crop_keypoints(detection)) for frame, detection in track]
        sequences.append(to_sequence(found, subject, camera, video, len(sequences)))
    report.kept = len(sequences)
    report.pose_frames = sum(len(s) for s in sequences)
    return sequences


def check_import_arguments(subject: str, camera_video: str, min_frames: int = 1, min_score: float | None = None,
                           max_gap: int | None = None) -> tuple[str, str]:
    """Raise BPMTError naming the first bad argument of `import_poses`; returns the camera and
    video numbers of `camera_video` ("camid<C>_videoid<V>") as strings."""
    if not SUBJECT.match(subject):
        raise BPMTError(f"--id {subject!r}: use letters, digits and '_' only "
                        "('-' separates the parts of a sequence name)")
    match = CAMERA_VIDEO.match(camera_video)
    if match is None:
        raise BPMTError(f"--camera {camera_video!r}: expected camid<C>_videoid<V>, e.g. camid0_videoid0")
    for flag, value in (("--min-frames", min_frames), ("--max-gap", max_gap)):
        if value is not None and value < 1:
            raise BPMTError(f"{flag} {value}: must be at least 1")
    if min_score is not None and not np.isfinite(min_score):
        raise BPMTError(f"--min-score {min_score}: must be a finite number")
    return str(int(match.group(1))), str(int(match.group(2)))


def default_subject(src: str | os.PathLike) -> str:
    """The identity folder name `bpmt import` uses without `--id`: SRC's file stem (folder name),
    every character other than a letter, digit or '_' replaced by '_'."""
    path = Path(src)
    stem = (path.resolve().name if path.is_dir() else path.stem) or "unknown"
    return re.sub(r"[^A-Za-z0-9_]", "_", stem)


# ---------------------------------------------------------------------------------------------
# Boxes, tracking and crops


def missing_joints(keypoints: np.ndarray) -> np.ndarray:
    """`(17, 3)` -> `(17,)` True where the joint is `(0, 0, 0)` (not found)."""
    return (keypoints == 0).all(axis=-1)


def with_boxes(frames: Frames, min_score: float | None, report: ImportReport) -> Frames:
    """`frames` without the detections below `min_score`, each remaining one with a box (the
    box around its pose where the format gives none; dropped when that cannot be drawn)."""
    kept: Frames = {}
    for frame, detections in frames.items():
        kept[frame] = []
        for detection in detections:
            if min_score is not None and detection.detection_score() < min_score:
                report.dropped["detection below --min-score"] += 1
                continue
            if detection.box is None:
                box = box_around_keypoints(detection.keypoints)      # missing joints have confidence 0
                if box is None:
                    report.dropped["detection without 4 joints of confidence >= 0.5"] += 1
                    continue
                detection = Detection(detection.keypoints, box, detection.score)
            kept[frame].append(detection)
    return kept


def track_detections(frames: Frames, max_gap: int | None, report: ImportReport) -> list[list[tuple[int, Detection]]]:
    """Link the detections (each with a box) into tracks with the video path's IoU tracker; returns
    each track's `(frame, detection)` list, tracks in order of first appearance."""
    tracker = IoUTracker() if max_gap is None else IoUTracker(max_gap=max_gap)
    tracks: dict[int, list[tuple[int, Detection]]] = {}
    for frame in sorted(frames):
        detections = frames[frame]
        boxes = np.stack([d.box for d in detections]) if detections else np.zeros((0, 4))   # (N, 4)
        matched = 0
        for track in tracker.update(frame, boxes):
            if track.detection is not None:
                tracks.setdefault(track.id, []).append((frame, detections[track.detection]))
                matched += 1
        report.dropped["detection not tracked"] += len(detections) - matched
    return [tracks[k] for k in sorted(tracks)]


def crop_keypoints(detection: Detection) -> tuple[np.ndarray, int, int]:
    """A detection's keypoints in the pixels of its crop (its box plus the video path's margin,
    whole pixels), missing joints kept at `(0, 0, 0)`; returns `(keypoints (17, 3), width, height)`."""
    x1, y1, x2, y2 = expand_boxes(detection.box[None], ExtractOptions().margin, NO_FRAME_EDGE, NO_FRAME_EDGE)[0]
    keypoints = detection.keypoints.copy()
    present = ~missing_joints(keypoints)
    keypoints[present, :2] -= (x1, y1)
    return keypoints, int(x2 - x1), int(y2 - y1)


# ---------------------------------------------------------------------------------------------
# Reading: JSON and its values


def load_json(path: Path) -> object:
    """The decoded content of a JSON file; DataError naming `path` when it cannot be read or parsed."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise DataError(f"{path}: expected a JSON file, found a folder") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data.strip():
        raise DataError(f"{path}: empty file")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DataError(f"{path}: not valid JSON ({str(exc)[:200]})") from None


def get_field(obj: object, name: str, where: str, optional: bool = False) -> object:
    """`obj[name]` of a JSON object; DataError when `obj` is not an object or (unless `optional`,
    which gives None) has no `name`."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected an object, found {json_kind(obj)}")
    if name not in obj:
        if optional:
            return None
        raise DataError(f'{where}: missing field "{name}"')
    return obj[name]


def numbers(value: object, count: int | tuple[int, ...], where: str, name: str) -> np.ndarray:
    """A JSON list of `count` (or any of the counts) plausible numbers as float64 `(count,)`."""
    counts = (count,) if isinstance(count, int) else count
    wanted = " or ".join(map(str, counts))
    if not isinstance(value, list):
        raise DataError(f'{where}: "{name}" must be a list of {wanted} numbers, found {json_kind(value)}')
    if len(value) not in counts:
        raise DataError(f'{where}: "{name}" must hold {wanted} numbers, found {len(value)}')
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise DataError(f'{where}: "{name}" value {i + 1} is not a number ({json_kind(item)})')
        if isinstance(item, int) and abs(item) > MAX_ABS_VALUE:   # before float(): huge ints overflow
            raise DataError(f'{where}: "{name}" value {i + 1} is implausible (|value| must not exceed '
                            f'{MAX_ABS_VALUE:g})')
    array = np.array(value, dtype=np.float64)
    bad = ~np.isfinite(array) | (np.abs(array) > MAX_ABS_VALUE)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = "not finite" if not np.isfinite(array[i]) else f"implausible (|value| must not exceed {MAX_ABS_VALUE:g})"
        raise DataError(f'{where}: "{name}" value {i + 1} is {what} ({array[i]:g})')
    return array


def number(value: object, where: str, name: str) -> float:
    """A single plausible JSON number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f'{where}: "{name}" must be a number, found {json_kind(value)}')
    return float(numbers([value], 1, where, name)[0])


def frame_number(value: object, where: str, name: str) -> int:
    """A JSON frame number: a non-negative integer (at most 18 digits)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10 ** 18:
        raise DataError(f'{where}: "{name}" must be a non-negative whole number, found {json_kind(value)}')
    return value


def xyxy_box(values: np.ndarray, where: str, name: str) -> np.ndarray:
    """`(4,)` x1, y1, x2, y2 with a positive width and height."""
    if not (values[2] > values[0] and values[3] > values[1]):
        raise DataError(f'{where}: "{name}" must have a positive width and height, found {values.tolist()}')
    return values


# ---------------------------------------------------------------------------------------------
# Formats


def read_alphapose(src: Path, report: ImportReport) -> Frames:
    """AlphaPose's results JSON (see the module docstring) -> detections per frame."""
    entries = load_json(src)
    if not isinstance(entries, list):
        raise DataError(f"{src}: expected AlphaPose's list of detections, found {json_kind(entries)}")
    if not entries:
        raise DataError(f"{src}: no detections (an empty list)")
    frames: Frames = {}
    image_of_frame: dict[int, tuple[object, str]] = {}
    for i, entry in enumerate(entries):
        where = f"{src}: detection {i}"
        image_id = get_field(entry, "image_id", where)
        frame = alphapose_frame(image_id, where)
        first = image_of_frame.setdefault(frame, (image_id, where))
        if first[0] != image_id:
            raise DataError(f'{where}: "image_id" {image_id!r} gives frame {frame}, as {first[0]!r} does '
                            f"({first[1].removeprefix(f'{src}: ')}); one frame number per image is needed")
        keypoints = numbers(get_field(entry, "keypoints", where), NUM_JOINTS * 3, where, "keypoints")
        score = number(get_field(entry, "score", where), where, "score")
        x, y, w, h = numbers(get_field(entry, "box", where), 4, where, "box")
        box = xyxy_box(np.array([x, y, x + w, y + h]), where, "box")
        frames.setdefault(frame, []).append(Detection(keypoints.reshape(NUM_JOINTS, 3), box, score))
    return frames


def alphapose_frame(image_id: object, where: str) -> int:
    """Frame number of an AlphaPose `image_id`: the number itself, or the last group of digits of
    a file name without its folder and extension."""
    if isinstance(image_id, str):
        groups = DIGITS.findall(Path(image_id).stem)
        if not groups:
            raise DataError(f'{where}: "image_id" {image_id[:60]!r} holds no frame number')
        if len(groups[-1].lstrip("0")) > 18:
            raise DataError(f'{where}: "image_id" {image_id[:60]!r}: frame number too large')
        return int(groups[-1])
    return frame_number(image_id, where, "image_id")


def read_openpose(src: Path, report: ImportReport) -> Frames:
    """A folder of OpenPose `*_<frame>_keypoints.json` files (see the module docstring) -> detections
    per frame."""
    if not src.is_dir():
        raise DataError(f"{src}: expected a folder of OpenPose *_keypoints.json files"
                        + (", found a file" if src.exists() else ": no such folder"))
    try:
        names = sorted(entry.name for entry in os.scandir(src) if entry.is_file())
    except OSError as exc:
        raise DataError(f"{src}: cannot list folder ({exc.strerror or exc})") from None
    files: dict[int, str] = {}
    for name in names:
        if not name.endswith("_keypoints.json"):
            report.ignored_files += 1
            continue
        match = OPENPOSE_FILE.search(name)
        if match is None:
            raise DataError(f"{src / name}: no frame number before '_keypoints.json'")
        frame = int(match.group(1))
        if frame in files:
            raise DataError(f"{src / name}: frame {frame} again (also in {files[frame]}); "
                            "one folder must hold one video's frames")
        files[frame] = name
    if not files:
        raise DataError(f"{src}: no OpenPose *_keypoints.json files")
    frames: Frames = {}
    first_layout: tuple[str, str] | None = None
    for frame, name in sorted(files.items()):
        path = src / name
        people = get_field(load_json(path), "people", str(path))
        if not isinstance(people, list):
            raise DataError(f'{path}: "people" must be a list, found {json_kind(people)}')
        frames[frame] = []
        for p, person in enumerate(people):
            where = f"{path}: person {p}"
            values = get_field(person, "pose_keypoints_2d", where)
            layout = next((k for k, n in OPENPOSE_JOINTS.items() if isinstance(values, list) and 3 * n == len(values)),
                          None)
            if layout is None:
                found = len(values) if isinstance(values, list) else json_kind(values)
                raise DataError(f'{where}: "pose_keypoints_2d" must hold 75 (BODY_25) or 54 (COCO-18) numbers, '
                                f"found {found}")
            values = numbers(values, 3 * OPENPOSE_JOINTS[layout], where, "pose_keypoints_2d")
            if first_layout is not None and layout != first_layout[0]:
                raise DataError(f"{where}: {layout} keypoints, but {first_layout[1]} holds {first_layout[0]} "
                                "(one folder must hold one model's output)")
            first_layout = first_layout or (layout, where)
            keypoints = values.reshape(-1, 3)[list(OPENPOSE_TO_COCO[layout])]          # (17, 3)
            frames[frame].append(Detection(keypoints, None, None))
    return frames


def read_mmpose(src: Path, report: ImportReport) -> Frames:
    """MMPose predictions in one of the three shapes of the module docstring -> detections per frame."""
    data = load_json(src)
    shapes = ("a list of frames (each a list of instances), a list of {\"frame_id\", \"instances\"}, "
              "or an object with \"instance_info\"")
    if isinstance(data, dict):
        if "instance_info" not in data:
            raise DataError(f"{src}: expected {shapes}; found an object with keys {sorted(map(str, data))[:5]}")
        data, where = data["instance_info"], f"{src}: instance_info"
        if not isinstance(data, list):
            raise DataError(f"{where}: must be a list of {{\"frame_id\", \"instances\"}}, found {json_kind(data)}")
    elif isinstance(data, list):
        where = str(src)
    else:
        raise DataError(f"{src}: expected {shapes}; found {json_kind(data)}")
    if not data:
        raise DataError(f"{where}: no frames (an empty list)")
    by_frame_id = isinstance(data[0], dict) and "instances" in data[0]
    if isinstance(data[0], dict) and not by_frame_id:
        raise DataError(f"{where}: item 0 is an object without \"instances\" (one image's instances?); expected {shapes}")
    frames: Frames = {}
    for i, item in enumerate(data):
        if by_frame_id:
            item_where = f"{where}: item {i}"
            frame = frame_number(get_field(item, "frame_id", item_where), item_where, "frame_id")
            instances = get_field(item, "instances", item_where)
            if frame in frames:
                raise DataError(f'{item_where}: "frame_id" {frame} again (one entry per frame is needed)')
            frame_where = f"{item_where} (frame {frame})"
        else:
            frame, instances, frame_where = i, item, f"{where}: frame {i}"
        if not isinstance(instances, list):
            raise DataError(f"{frame_where}: expected a list of instances, found {json_kind(instances)}")
        frames[frame] = [mmpose_instance(instance, f"{frame_where}: instance {k}")
                         for k, instance in enumerate(instances)]
    return frames


def mmpose_instance(instance: object, where: str) -> Detection:
    """One MMPose instance (17 keypoints, their scores, optional bbox and bbox_score)."""
    points = get_field(instance, "keypoints", where)
    if not isinstance(points, list) or len(points) != NUM_JOINTS:
        found = len(points) if isinstance(points, list) else json_kind(points)
        raise DataError(f'{where}: "keypoints" must hold {NUM_JOINTS} [x, y] points (COCO-17), found {found}')
    xy = np.stack([numbers(point, 2, where, f"keypoints[{j}]") for j, point in enumerate(points)])   # (17, 2)
    scores = numbers(get_field(instance, "keypoint_scores", where), NUM_JOINTS, where, "keypoint_scores")
    box = get_field(instance, "bbox", where, optional=True)
    if box is not None:
        if isinstance(box, list) and len(box) == 1 and isinstance(box[0], list):
            box = box[0]                                         # MMPose writes [[x1, y1, x2, y2]]
        box = xyxy_box(numbers(box, 4, where, "bbox"), where, "bbox")
    score = get_field(instance, "bbox_score", where, optional=True)
    if score is not None:
        score = number(score, where, "bbox_score")
    return Detection(np.concatenate([xy, scores[:, None]], axis=1), box, score)


READERS: dict[str, Callable[[Path, ImportReport], Frames]] = {
    "alphapose": read_alphapose, "openpose": read_openpose, "mmpose": read_mmpose}
