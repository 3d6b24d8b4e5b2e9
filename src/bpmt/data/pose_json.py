"""A pose sequence sent as JSON (the HTTP service's input): validation with errors that name
the frame and joint, and `json_kind`, how a JSON value looks in such an error."""

from __future__ import annotations

import json

import numpy as np

from ..errors import DataError
from ..skeleton import JOINT_NAMES, NUM_JOINTS
from ..text import plural
from .sequence import MAX_ABS_VALUE, check_keypoints


def parse_pose_json(obj: object, source: str = "<json>", *, min_frames: int = 1,
                    max_frames: int | None = None) -> np.ndarray:
    """A pose sequence sent as JSON -> `(T, 17, 3)` float32 keypoints (x, y, confidence).

    `obj` is the decoded JSON value, or the JSON text itself (str or bytes): a list of frames, each
    a list of 17 `[x, y, confidence]` triples in COCO-17 order, or an object whose `"keypoints"`
    holds that list (other keys are the caller's). Every problem - not JSON, a wrong structure or
    shape, a value that is not a number (strings and booleans included), NaN or inf, |value| > 1e6,
    fewer than `min_frames` or more than `max_frames` frames - raises DataError naming `source`,
    the frame and the joint.
    """
    if isinstance(obj, (str, bytes, bytearray)):
        try:
            obj = json.loads(obj)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise DataError(f"{source}: not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
    where = source
    if isinstance(obj, dict):
        if "keypoints" not in obj:
            raise DataError(f"{source}: expected a list of frames or an object with \"keypoints\", "
                            f"found an object with keys {sorted(map(str, obj))[:5]}")
        obj, where = obj["keypoints"], f"{source}: keypoints"
    if not isinstance(obj, (list, tuple)):
        raise DataError(f"{where}: expected a list of frames, each 17 [x, y, confidence] joints; "
                        f"found {json_kind(obj)}")
    if len(obj) < min_frames:
        raise DataError(f"{where}: {plural(len(obj), 'frame')}, at least {min_frames} needed")
    if max_frames is not None and len(obj) > max_frames:
        raise DataError(f"{where}: {plural(len(obj), 'frame')}, at most {max_frames} allowed")
    flat: list = []
    for t, frame in enumerate(obj):
        if not isinstance(frame, (list, tuple)) or len(frame) != NUM_JOINTS:
            raise DataError(f"{where}: frame {t}: expected a list of {NUM_JOINTS} [x, y, confidence] joints, "
                            f"found {json_kind(frame)}")
        for j, joint in enumerate(frame):
            if not isinstance(joint, (list, tuple)) or len(joint) != 3:
                raise DataError(f"{where}: frame {t}, joint {j} ({JOINT_NAMES[j]}): expected [x, y, confidence], "
                                f"found {json_kind(joint)}")
            flat.extend(joint)
    if not all(_is_number_type(kind) for kind in set(map(type, flat))):
        i = next(i for i, v in enumerate(flat) if not _is_number_type(type(v)))
        raise DataError(f"{_joint_of(where, i)}: value {i % 3 + 1} is not a number ({json_kind(flat[i])})")
    try:
        values = np.array(flat, dtype=np.float64).reshape(len(obj), NUM_JOINTS, 3)
    except OverflowError:                          # an integer beyond float64: implausible anyway
        i = next(i for i, v in enumerate(flat) if abs(v) > MAX_ABS_VALUE)
        raise DataError(f"{_joint_of(where, i)}: value {i % 3 + 1} is implausible "
                        f"(|value| must not exceed {MAX_ABS_VALUE:g})") from None
    check_keypoints(values, where)
    return values.astype(np.float32)


def _joint_of(where: str, index: int) -> str:
    """`where: frame t, joint j (name)` for the `index`-th number of a flattened `(T, 17, 3)` list."""
    frame, joint = index // (NUM_JOINTS * 3), index // 3 % NUM_JOINTS
    return f"{where}: frame {frame}, joint {joint} ({JOINT_NAMES[joint]})"


def _is_number_type(kind: type) -> bool:
    return issubclass(kind, (int, float)) and not issubclass(kind, bool)   # true is not a coordinate


def json_kind(value: object) -> str:
    """How a JSON value looks, for error messages (never the whole value)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) > 10 ** 18:   # repr of a huge int is slow, or refused
        return "a very large integer"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"[:60]
    if isinstance(value, str):
        return f"the string {value[:30]!r}"
    if isinstance(value, dict):
        return f"an object with {len(value)} keys"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    return type(value).__name__
