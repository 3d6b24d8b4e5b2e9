"""Write pose sequences in Gait3D's native layout, so every DATA argument reads them:
`OUT/2D_Poses/<ID>/<camidC_videoidV>/<seqK>/human_crop_f<frame>.txt`, one line per file:
crop width, crop height, 17 x (x, y, confidence)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable

import numpy as np

from ...data.gait3d import CAMERA_VIDEO
from ...data.sequence import Sequence
from ...errors import DataError
from ...skeleton import NUM_JOINTS


def sequence_folder(sequence: Sequence) -> Path:
    """`<ID>/<camidC_videoidV>/<seqK>` of a sequence named `<ID>-<camidC_videoidV>-<seqK>`."""
    camera_video = f"camid{sequence.camera}_videoid{sequence.video}"
    prefix = f"{sequence.subject}-{camera_video}-"
    seq = sequence.name[len(prefix):]
    if not CAMERA_VIDEO.match(camera_video) or not sequence.name.startswith(prefix) or not seq \
            or any(c in seq for c in "-/\\") or seq.startswith("."):
        raise DataError(f"sequence {sequence.name!r}: cannot be written in the Gait3D layout (expected a name "
                        f"'<ID>-camid<C>_videoid<V>-<seq>' matching subject {sequence.subject!r}, "
                        f"camera {sequence.camera!r}, video {sequence.video!r})")
    if not sequence.subject or any(c in sequence.subject for c in "-/\\") or sequence.subject.startswith("."):
        raise DataError(f"sequence {sequence.name!r}: subject {sequence.subject!r} cannot be a folder name")
    return Path(sequence.subject) / camera_video / seq


def frame_line(crop_size: np.ndarray, keypoints: np.ndarray) -> str:
    """One frame file's line; 9 significant digits reproduce a float32 exactly."""
    values = np.concatenate([np.asarray(crop_size, dtype=np.float64).reshape(2),
                             np.asarray(keypoints, dtype=np.float64).reshape(NUM_JOINTS * 3)])
    return ",".join(format(v, ".9g") for v in values) + "\n"


def write_sequences(sequences: Iterable[Sequence], out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write each sequence under `out_dir/2D_Poses/`; returns that `2D_Poses` folder.

    The sequences of one extraction form a unit: a `<ID>/<camid_videoid>` folder they go to that
    already holds anything is an error (old and new sequences would mix) unless `overwrite`, which
    replaces that folder whole (so no stale `seq<K>` of an earlier, longer run survives).
    """
    root = Path(out_dir) / "2D_Poses"
    sequences = list(sequences)
    folders = [sequence_folder(s) for s in sequences]
    for sequence in sequences:
        _check_arrays(sequence)
    if len(set(folders)) != len(folders):
        raise DataError(f"{root}: two sequences would share one folder ({len(folders) - len(set(folders))} clashes)")
    for camera_video in sorted({root / folder.parent for folder in folders}):
        if overwrite and camera_video.is_dir():
            shutil.rmtree(camera_video)
        else:
            refuse_existing(camera_video)
    try:
        for sequence, folder in zip(sequences, folders):
            target = root / folder
            target.mkdir(parents=True, exist_ok=True)
            for frame, size, keypoints in zip(sequence.frames, sequence.crop_sizes, sequence.keypoints):
                (target / f"human_crop_f{int(frame)}.txt").write_text(frame_line(size, keypoints))
    except OSError as exc:
        raise DataError(f"{exc.filename or root}: cannot write ({exc.strerror or exc})") from None
    return root


def output_folder(out_dir: str | os.PathLike, subject: str, camera: str, video: str) -> Path:
    """`out_dir/2D_Poses/<ID>/camid<C>_videoid<V>`: where one extraction's sequences go."""
    return Path(out_dir) / "2D_Poses" / subject / f"camid{camera}_videoid{video}"


def refuse_existing(folder: Path, advice: str = "choose another --out, --subject or --video-id, "
                                                 "or --overwrite to replace them") -> None:
    """DataError when `folder` exists and is not empty; `advice` says what to do instead."""
    try:
        occupied = folder.exists() and (not folder.is_dir() or any(folder.iterdir()))
    except OSError as exc:
        raise DataError(f"{folder}: cannot list folder ({exc.strerror or exc})") from None
    if occupied:
        raise DataError(f"{folder}: already holds sequences ({advice})")


def _check_arrays(sequence: Sequence) -> None:
    frames, keypoints, sizes = sequence.frames, sequence.keypoints, sequence.crop_sizes
    problem = None
    if len(frames) == 0:
        problem = "no frames"
    elif keypoints.shape != (len(frames), NUM_JOINTS, 3) or sizes.shape != (len(frames), 2):
        problem = (f"expected keypoints ({len(frames)}, {NUM_JOINTS}, 3) and crop sizes ({len(frames)}, 2), "
                   f"found {keypoints.shape} and {sizes.shape}")
    elif np.any(np.diff(frames) <= 0) or frames[0] < 0:
        problem = "frame numbers must be non-negative and strictly ascending"
    elif not (np.isfinite(keypoints).all() and np.isfinite(sizes).all()):
        problem = "contains NaN or infinite values"
    if problem:
        raise DataError(f"sequence {sequence.name!r}: {problem}")
