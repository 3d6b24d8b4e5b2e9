"""Reading a request to `bpmt serve`: content type, JSON, fields, keypoints, multipart options.

Checked in that order, each failure an `HTTPException` whose detail says what is wrong and where:
415 wrong content type, 400 not JSON, 422 invalid fields or values (naming the frame and joint),
413 too many frames.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from ..errors import DataError
from ..skeleton import NUM_JOINTS
from .http_limits import MAX_TOP_K, MB, Limits

JSON_TYPES = ("application/json",)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def require_json(request: Request, also: str = "") -> None:
    kind = media_type(request)
    if kind not in JSON_TYPES and not kind.endswith("+json"):
        raise HTTPException(415, f"{request.url.path}: Content-Type must be application/json{also}, "
                                 f"got {kind or 'none'}")


def decode_json(body: bytes) -> dict:
    """Request body -> its JSON object (400 if not JSON, 422 if not an object)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:   # JSONDecodeError, UnicodeDecodeError, int too long, nesting
        raise HTTPException(400, f"request body is not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(value, dict):
        from ..data.pose_json import json_kind

        raise HTTPException(422, f"request body: expected a JSON object with \"keypoints\", found {json_kind(value)}")
    return value


def validate(model: type[BaseModel], value: dict) -> BaseModel:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise HTTPException(422, "request body: " + describe_errors(exc.errors())) from None


def describe_errors(errors: list[dict]) -> str:
    """Pydantic / FastAPI validation errors -> one line: `field: problem; field: problem`."""
    parts = []
    for error in errors[:3]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def pose(keypoints: Any, limits: Limits, min_frames: int) -> np.ndarray:
    """The request's `keypoints` -> `(T, 17, 3)` float32; too many frames is a 413, the rest 422."""
    from ..data.pose_json import json_kind, parse_pose_json

    if not isinstance(keypoints, list):            # parse_pose_json would read a string as JSON text
        raise HTTPException(422, f"request body: keypoints: expected a list of frames, each {NUM_JOINTS} "
                                 f"[x, y, confidence] joints; found {json_kind(keypoints)}")
    if len(keypoints) > limits.max_frames:
        raise HTTPException(413, f"request body: keypoints: {len(keypoints):,} frames, "
                                 f"at most {limits.max_frames:,} allowed")
    try:
        return parse_pose_json(keypoints, "request body: keypoints", min_frames=min_frames,
                               max_frames=limits.max_frames)
    except DataError as exc:
        raise HTTPException(422, str(exc)) from None


# ---------------------------------------------------------------------------------------------
# Multipart (video uploads)


def form_options(form) -> tuple[int, Any]:
    """`top_k` and `threshold` of a multipart form (strings), checked like the JSON fields."""
    raw_k, raw_threshold = form.get("top_k", "5"), form.get("threshold")
    try:
        top_k = int(raw_k)
    except (TypeError, ValueError):
        raise HTTPException(422, f"multipart body: top_k: expected a whole number, got {str(raw_k)[:30]!r}") from None
    if not 1 <= top_k <= MAX_TOP_K:
        raise HTTPException(422, f"multipart body: top_k: must lie in [1, {MAX_TOP_K}], got {top_k}")
    if raw_threshold is None:
        return top_k, "gallery"
    if str(raw_threshold).strip().lower() in ("none", "null"):
        return top_k, None
    try:
        threshold = float(raw_threshold)
    except (TypeError, ValueError):
        threshold = float("nan")
    if not (math.isfinite(threshold) and threshold >= 0):
        raise HTTPException(422, f"multipart body: threshold: expected a finite distance >= 0 or `none`, "
                                 f"got {str(raw_threshold)[:30]!r}")
    return top_k, threshold


def copy_upload(source, path: Path) -> None:
    source.seek(0)
    with open(path, "wb") as handle:
        shutil.copyfileobj(source, handle, MB)
